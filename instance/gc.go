package instance

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-multierror"
	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/internal/incusop"
	"github.com/lxc/incus/v6/shared/api"
	"golang.org/x/sync/errgroup"
)

// GCOptions selects what GC deletes.
type GCOptions struct {
	// OlderThan keeps instances created less than this long ago (by
	// LabelCreated, or the server's creation time); zero deletes all.
	OlderThan time.Duration
	// Concurrency bounds parallel deletions (4 when zero).
	Concurrency int
	// Keep, when set, spares the instances for which it returns true (the
	// ones the host still uses).
	Keep func(name string) bool
}

// List returns the names of the instances labelled with the manager's
// owner, sorted.
func (m *Manager) List(ctx context.Context) ([]string, error) {
	insts, err := m.owned(ctx)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(insts))
	for _, in := range insts {
		names = append(names, in.Name)
	}
	slices.Sort(names)
	return names, nil
}

func (m *Manager) owned(ctx context.Context) ([]api.Instance, error) {
	insts, err := incusop.Bind(ctx, m.c).GetInstancesWithFilter(api.InstanceTypeAny,
		[]string{"config." + executor.OwnerKey + "=" + m.cfg.Owner})
	if err != nil {
		return nil, fmt.Errorf("list instances of owner %s: %w", m.cfg.Owner, err)
	}
	// The filter runs on the server; check it here too.
	return slices.DeleteFunc(insts, func(in api.Instance) bool { return in.Config[executor.OwnerKey] != m.cfg.Owner }), nil
}

// unreachable returns, by cluster member, the instances the server lists
// without their configuration: a cluster lists the instances of a member
// that is down with status Error and nothing else, so the owner filter
// cannot see them.
func (m *Manager) unreachable(ctx context.Context) (map[string][]string, error) {
	insts, err := incusop.Bind(ctx, m.c).GetInstancesWithFilter(api.InstanceTypeAny, []string{"status=Error"})
	if err != nil {
		return nil, fmt.Errorf("list instances in error state: %w", err)
	}
	byMember := map[string][]string{}
	for _, in := range insts {
		if in.StatusCode == api.Error && len(in.Config) == 0 && in.Location != "" && in.Location != "none" {
			byMember[in.Location] = append(byMember[in.Location], in.Name)
		}
	}
	for _, names := range byMember {
		slices.Sort(names)
	}
	return byMember, nil
}

// GC deletes the owner's instances selected by opts (force-stopping running
// ones) and returns the names deleted. It keeps going past failures and
// returns them all in a *multierror.Error. On a cluster with a member down,
// the server cannot say which of that member's instances are the owner's:
// GC leaves them, and reports the member and its instances in an error
// wrapping ErrUnavailable; a later GC, with the member back, deletes them.
//
// When GC returns, what it deleted is gone from the server, and no instance
// the server was still creating when GC began escaped it: a host killed
// mid-launch leaves a creation that the server completes on its own (the
// instance carries the owner label only once it exists), and an ephemeral
// instance that was stopping deletes itself in the background while still
// listed. So GC first waits for the instance creations in flight on the
// server (any owner's: an operation does not say whose it is), deletes,
// waits until each deleted instance is no longer listed, and looks again
// until a look finds nothing new, all within ctx.
func (m *Manager) GC(ctx context.Context, opts GCOptions) ([]string, error) {
	limit := opts.Concurrency
	if limit <= 0 {
		limit = 4
	}
	var (
		mu      sync.Mutex
		deleted []string
		errs    *multierror.Error
	)
	tried := map[string]bool{}
	var (
		unreachable map[string][]string
		insts       []api.Instance
	)
	for pass := 1; ; pass++ {
		if err := m.waitCreations(ctx); err != nil {
			return deleted, errors.Join(errs.ErrorOrNil(), err)
		}
		var err error
		insts, err = m.owned(ctx)
		if err != nil {
			return deleted, errors.Join(errs.ErrorOrNil(), err)
		}
		if unreachable, err = m.unreachable(ctx); err != nil {
			return deleted, errors.Join(errs.ErrorOrNil(), err)
		}
		victims := m.victims(insts, opts, tried)
		// A live host may keep creating: a few looks are enough for what
		// a dead one left.
		if len(victims) == 0 || pass > maxGCPasses {
			break
		}
		g := new(errgroup.Group)
		g.SetLimit(limit)
		for _, name := range victims {
			tried[name] = true
			g.Go(func() error {
				err := m.Instance(name).Delete(ctx)
				if err == nil {
					err = m.waitGone(ctx, name)
				}
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = multierror.Append(errs, err)
				} else {
					deleted = append(deleted, name)
				}
				return nil
			})
		}
		_ = g.Wait()
	}
	// Instances GC keeps may hold the recorded output of execs whose hosts
	// died before fetching it.
	var kept []string
	for _, in := range insts {
		if !tried[in.Name] {
			kept = append(kept, in.Name)
		}
	}
	m.sweepExecOutput(ctx, kept) // exec_gc.go
	for _, loc := range slices.Sorted(maps.Keys(unreachable)) {
		names := unreachable[loc]
		if opts.Keep != nil {
			names = slices.DeleteFunc(names, opts.Keep)
		}
		if len(names) == 0 {
			continue
		}
		errs = multierror.Append(errs, fmt.Errorf("%w: cluster member %s: cannot tell whether its instances %s are owner %s's, nor delete them",
			ErrUnavailable, loc, strings.Join(names, ", "), m.cfg.Owner))
	}
	slices.Sort(deleted)
	failed := 0
	if errs != nil {
		failed = len(errs.Errors)
	}
	m.log.Info("garbage collected instances", "owner", m.cfg.Owner, "deleted", len(deleted), "failed", failed)
	return deleted, errs.ErrorOrNil()
}

// maxGCPasses bounds GC's looks for instances that appeared meanwhile.
const maxGCPasses = 4

// victims selects, among the owner's instances, those opts lets GC delete
// and that it has not tried yet.
func (m *Manager) victims(insts []api.Instance, opts GCOptions, tried map[string]bool) []string {
	now := time.Now()
	var out []string
	for _, in := range insts {
		if tried[in.Name] || opts.Keep != nil && opts.Keep(in.Name) {
			continue
		}
		created := in.CreatedAt
		if t, err := time.Parse(time.RFC3339, in.Config[LabelCreated]); err == nil {
			created = t
		}
		if opts.OlderThan > 0 && now.Sub(created) < opts.OlderThan {
			continue
		}
		out = append(out, in.Name)
	}
	return out
}

// operationLister lists the server's operations; the Incus client is one,
// narrow fakes need not be (GC then cannot see creations in flight).
type operationLister interface {
	GetOperations() ([]api.Operation, error)
}

// creatingDescription is how incusd describes an instance creation
// operation (operationtype.InstanceCreate), in 6.0 as in later releases.
const creatingDescription = "Creating instance"

// creationsInFlight returns the names of the instances the server is
// creating.
func (m *Manager) creationsInFlight(ctx context.Context) ([]string, error) {
	ol, ok := any(incusop.Bind(ctx, m.c)).(operationLister)
	if !ok {
		return nil, nil
	}
	ops, err := ol.GetOperations()
	if err != nil {
		return nil, fmt.Errorf("list operations: %w", err)
	}
	var names []string
	for _, op := range ops {
		if op.Description != creatingDescription || (op.StatusCode != api.Running && op.StatusCode != api.Pending) {
			continue
		}
		for _, u := range op.Resources["instances"] {
			names = append(names, path.Base(strings.SplitN(u, "?", 2)[0]))
		}
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// waitCreations waits until the server carries out no instance creation.
func (m *Manager) waitCreations(ctx context.Context) error {
	for logged := false; ; {
		names, err := m.creationsInFlight(ctx)
		if err != nil || len(names) == 0 {
			return err
		}
		if !logged {
			m.log.Info("waiting for instance creations in flight before collecting", "instances", names)
			logged = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("gc of owner %s: waiting for the creation of %s: %w", m.cfg.Owner, strings.Join(names, ", "), context.Cause(ctx))
		case <-time.After(m.cfg.PollInterval):
		}
	}
}

// waitGone waits until the server no longer has the instance: a deletion
// that reported the instance gone may have met the instance's own
// (ephemeral) deletion, still removing its storage and then its record.
func (m *Manager) waitGone(ctx context.Context, name string) error {
	for {
		_, _, err := incusop.Bind(ctx, m.c).GetInstance(name)
		if api.StatusErrorCheck(err, http.StatusNotFound) {
			return nil
		}
		select {
		case <-ctx.Done():
			return wrapErr(fmt.Errorf("still listed after its deletion: %w", context.Cause(ctx)), name, "delete")
		case <-time.After(m.cfg.PollInterval):
		}
	}
}
