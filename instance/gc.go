package instance

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-multierror"
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
		[]string{"config." + LabelOwner + "=" + m.cfg.Owner})
	if err != nil {
		return nil, fmt.Errorf("list instances of owner %s: %w", m.cfg.Owner, err)
	}
	// The filter runs on the server; check it here too.
	return slices.DeleteFunc(insts, func(in api.Instance) bool { return in.Config[LabelOwner] != m.cfg.Owner }), nil
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
func (m *Manager) GC(ctx context.Context, opts GCOptions) ([]string, error) {
	insts, err := m.owned(ctx)
	if err != nil {
		return nil, err
	}
	unreachable, err := m.unreachable(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	var victims, kept []string
	for _, in := range insts {
		if opts.Keep != nil && opts.Keep(in.Name) {
			kept = append(kept, in.Name)
			continue
		}
		created := in.CreatedAt
		if t, err := time.Parse(time.RFC3339, in.Config[LabelCreated]); err == nil {
			created = t
		}
		if opts.OlderThan > 0 && now.Sub(created) < opts.OlderThan {
			kept = append(kept, in.Name)
			continue
		}
		victims = append(victims, in.Name)
	}
	limit := opts.Concurrency
	if limit <= 0 {
		limit = 4
	}
	var (
		mu      sync.Mutex
		deleted []string
		errs    *multierror.Error
	)
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
	g := new(errgroup.Group)
	g.SetLimit(limit)
	for _, name := range victims {
		g.Go(func() error {
			err := m.Instance(name).Delete(ctx)
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
	m.sweepExecOutput(ctx, kept) // exec_gc.go
	slices.Sort(deleted)
	failed := 0
	if errs != nil {
		failed = len(errs.Errors)
	}
	m.log.Info("garbage collected instances", "owner", m.cfg.Owner, "deleted", len(deleted), "failed", failed)
	return deleted, errs.ErrorOrNil()
}
