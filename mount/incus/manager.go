package incus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/internal/incusop"
	"github.com/incusexec/incusexec/mount"
	incusclient "github.com/lxc/incus/v6/client"
	"github.com/lxc/incus/v6/shared/api"
)

// Client is the part of the Incus client the Manager uses;
// incusclient.InstanceServer satisfies it.
type Client interface {
	GetInstance(name string) (instance *api.Instance, ETag string, err error)
	UpdateInstance(name string, instance api.InstancePut, ETag string) (op incusclient.Operation, err error)
}

// Config configures a Manager.
type Config struct {
	// Client talks to the Incus server holding the instances.
	Client Client
	// AllowedRoots are the host directories under which sources may lie;
	// none means no source is allowed.
	AllowedRoots []string
	// Owner is recorded with every hold this manager takes, so that a host
	// can tell its holds from those of other processes; "incusexec" when
	// empty.
	Owner string
	// Timeout bounds one round of changes to an instance (read, write, wait
	// for the devices to be attached or detached); 2 minutes when zero.
	Timeout time.Duration
	// Logger receives what the manager does; discarded when nil.
	Logger *slog.Logger
}

// Manager is the Incus implementation of Mounter: each mounted alias is a
// disk device of the instance, and the holds are recorded in the instance's
// configuration next to it, so that the server, not the process, holds the
// reference counts. See the package documentation.
type Manager struct {
	client  Client
	allow   *mount.Allowlist
	owner   string
	timeout time.Duration
	log     *slog.Logger

	mu     sync.Mutex
	queues map[string]*queue // instance -> changes waiting for its writer
}

var (
	_ mount.Mounter   = (*Manager)(nil)
	_ mount.Inspector = (*Manager)(nil)
)

// New returns a Manager for cfg.
func New(cfg Config) (*Manager, error) {
	if cfg.Client == nil {
		return nil, fmt.Errorf("%w: no Incus client", mount.ErrInvalid)
	}
	allow, err := mount.NewAllowlist(cfg.AllowedRoots...)
	if err != nil {
		return nil, err
	}
	client := cfg.Client
	if s, ok := client.(incusclient.InstanceServer); ok {
		client = incusop.Shared(s) // operations from many goroutines at once
	}
	m := &Manager{
		client:  client,
		allow:   allow,
		owner:   cfg.Owner,
		timeout: cfg.Timeout,
		log:     cfg.Logger,
		queues:  map[string]*queue{},
	}
	if m.owner == "" {
		m.owner = "incusexec"
	}
	if m.timeout <= 0 {
		m.timeout = 2 * time.Minute
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	return m, nil
}

// Allowlist returns the manager's allowed source roots.
func (m *Manager) Allowlist() *mount.Allowlist { return m.allow }

// change is one Acquire or Release waiting to be written.
type change struct {
	release  bool
	rollback bool // a release issued for an Acquire whose caller gave up
	alias    string
	hash     string
	source   string
	src      sourceInfo // the source's owner and mode, for checkReadable
	opts     executor.MountOptions
	holder   string
	done     chan error // buffered; receives the result once

	taken     bool // being written; guarded by Manager.mu
	abandoned bool // the caller gave up; guarded by Manager.mu
}

type queue struct {
	pending []*change
}

// Acquire implements Mounter: it attaches source to instance at
// Path(alias) as the disk device DeviceName(alias), unless the alias is
// attached already, and records the hold in the instance's configuration.
// Concurrent calls for one instance are written together in one update.
func (m *Manager) Acquire(ctx context.Context, instance, alias, source string, opts executor.MountOptions) (mount.Handle, error) {
	if err := mount.CheckAcquire(instance, alias, opts); err != nil {
		return mount.Handle{}, err
	}
	resolved, err := m.allow.Resolve(source)
	if err != nil {
		return mount.Handle{}, err
	}
	c := &change{alias: alias, hash: mount.AliasHash(alias), source: resolved, src: statSource(resolved), opts: opts, holder: mount.NewHolderID(), done: make(chan error, 1)}
	if err := m.submit(ctx, instance, c); err != nil {
		return mount.Handle{}, err
	}
	h := mount.Handle{Instance: instance, Alias: alias, Path: mount.Path(alias), Holder: c.holder}
	// Narrow the window of a symlink swapped into the path between Resolve
	// and the server's mount: if the path no longer resolves to itself, the
	// server may have followed the swap, so let go and refuse.
	if again, err := filepath.EvalSymlinks(resolved); err != nil || again != resolved {
		rerr := m.Release(context.WithoutCancel(ctx), h)
		return mount.Handle{}, errors.Join(fmt.Errorf("%w: source %q changed while being attached to %s (now %q, %v)", mount.ErrNotAllowed, resolved, instance, again, err), rerr)
	}
	return h, nil
}

// Release implements Mounter. When ctx ends while the release is being
// written, Release returns ctx's error but the release may still complete;
// retrying then reports ErrNotHeld.
func (m *Manager) Release(ctx context.Context, h mount.Handle) error {
	if err := mount.ValidateHandle(h); err != nil {
		return err
	}
	c := &change{release: true, alias: h.Alias, hash: mount.AliasHash(h.Alias), holder: h.Holder, done: make(chan error, 1)}
	return m.submit(ctx, h.Instance, c)
}

// Mounts implements Inspector, reading the instance from the server.
func (m *Manager) Mounts(ctx context.Context, instance string) ([]mount.Mount, error) {
	if err := mount.CheckInstance(instance); err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("mount: mounts of %s: %w", instance, context.Cause(ctx))
	}
	inst, _, err := m.client.GetInstance(instance)
	if err != nil {
		if api.StatusErrorCheck(err, http.StatusNotFound) {
			return nil, fmt.Errorf("%w: %s", mount.ErrNotFound, instance)
		}
		return nil, fmt.Errorf("mount: get instance %s: %w", instance, err)
	}
	entries, _ := parseEntries(inst)
	out := make([]mount.Mount, 0, len(entries))
	for _, e := range entries {
		out = append(out, e.mount())
	}
	slices.SortFunc(out, func(a, b mount.Mount) int {
		if a.Alias < b.Alias {
			return -1
		}
		if a.Alias > b.Alias {
			return 1
		}
		return 0
	})
	return out, nil
}

// submit queues c for instance's writer and waits for its result.
func (m *Manager) submit(ctx context.Context, instance string, c *change) error {
	if ctx.Err() != nil {
		return fmt.Errorf("mount: %s %q on %s: %w", c.verb(), c.alias, instance, context.Cause(ctx))
	}
	m.mu.Lock()
	q := m.queues[instance]
	if q == nil {
		q = &queue{}
		m.queues[instance] = q
		go m.write(instance, q)
	}
	q.pending = append(q.pending, c)
	m.mu.Unlock()

	select {
	case err := <-c.done:
		return err
	case <-ctx.Done():
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	select {
	case err := <-c.done: // finished meanwhile: report what happened
		return err
	default:
	}
	verb := c.verb()
	if !c.taken {
		q.pending = slices.DeleteFunc(q.pending, func(x *change) bool { return x == c })
		return fmt.Errorf("mount: %s %q on %s: %w", verb, c.alias, instance, context.Cause(ctx))
	}
	c.abandoned = true // write undoes an acquire that succeeds
	return fmt.Errorf("mount: %s %q on %s: %w (still being written)", verb, c.alias, instance, context.Cause(ctx))
}

// write is the one writer of an instance while changes are queued for it:
// it takes all of them, applies them in one update, delivers the results,
// and exits when the queue is empty.
func (m *Manager) write(instance string, q *queue) {
	for {
		m.mu.Lock()
		batch := q.pending
		q.pending = nil
		if len(batch) == 0 {
			delete(m.queues, instance)
			m.mu.Unlock()
			return
		}
		for _, c := range batch {
			c.taken = true
		}
		m.mu.Unlock()

		results := m.apply(instance, batch)

		m.mu.Lock()
		for i, c := range batch {
			err := results[i]
			if c.rollback && err != nil && !errors.Is(err, mount.ErrNotHeld) {
				m.log.Error("mount: cannot release an abandoned acquire", "instance", instance, "alias", c.alias, "holder", c.holder, "err", err)
			}
			if c.abandoned && !c.release && err == nil {
				q.pending = append(q.pending, &change{
					release: true, rollback: true, alias: c.alias, hash: c.hash, holder: c.holder, done: make(chan error, 1),
				})
			}
			c.done <- err
		}
		m.mu.Unlock()
	}
}

// Attempts after an update conflict (another writer changed the instance
// between our read and our write).
const maxAttempts = 30

// apply writes batch to instance in one read-modify-write, retried on
// conflicts. When the update fails otherwise, each change of a larger batch
// is applied on its own so that one bad change fails alone.
func (m *Manager) apply(instance string, batch []*change) []error {
	ctx, cancel := context.WithTimeout(context.Background(), m.timeout)
	defer cancel()
	// No incusop.Bind: a bound copy per batch would open an event
	// connection per batch; m.client (incusop.Shared) starts operations on
	// pooled copies instead. Reads and writes are short; the wait for the operation, the
	// long part, follows ctx.
	client := m.client
	results := make([]error, len(batch))
	for attempt := 1; ; attempt++ {
		inst, etag, err := client.GetInstance(instance)
		if err != nil {
			if api.StatusErrorCheck(err, http.StatusNotFound) {
				m.log.Debug("mount: instance is gone", "instance", instance)
				for i, c := range batch {
					results[i] = nil // its mounts went with it
					if !c.release {
						results[i] = fmt.Errorf("%w: %s (acquiring %q)", mount.ErrNotFound, instance, c.alias)
					}
				}
				return results
			}
			for i := range batch {
				results[i] = fmt.Errorf("mount: get instance %s: %w", instance, err)
			}
			return results
		}
		old, stale := parseEntries(inst)
		if len(stale) > 0 {
			m.log.Warn("mount: ignoring records without a matching device", "instance", instance, "records", stale)
		}
		next := make(map[string]*entry, len(old))
		for h, e := range old {
			next[h] = e.clone()
		}
		for i, c := range batch {
			results[i] = m.plan(inst, next, c, instance)
		}
		put, added, removed := render(inst, old, next)
		if put == nil {
			return results
		}
		op, err := client.UpdateInstance(instance, *put, etag)
		if err == nil {
			err = incusop.Wait(ctx, op, client)
		}
		if err == nil {
			m.log.Debug("mount: updated instance", "instance", instance, "changes", len(batch), "attached", added, "detached", removed, "attempt", attempt)
			return results
		}
		// 412: the ETag is stale; 404 on update: gone since the read (the
		// next read says so); incusd's file helper going away under a
		// device's start or stop (it exits when idle), after which incusd
		// has put the instance back as it was.
		if (api.StatusErrorCheck(err, http.StatusPreconditionFailed, http.StatusNotFound) || forkfileGone(err)) && attempt < maxAttempts && ctx.Err() == nil {
			backoff := min(time.Duration(1<<min(attempt, 8))*2*time.Millisecond, 250*time.Millisecond)
			time.Sleep(backoff/2 + rand.N(backoff))
			continue
		}
		if len(batch) > 1 && ctx.Err() == nil {
			for i, c := range batch {
				if results[i] == nil {
					results[i] = m.apply(instance, []*change{c})[0]
				}
			}
			return results
		}
		for i, c := range batch {
			if results[i] == nil {
				results[i] = changeError(c, inst, err)
			}
		}
		return results
	}
}

// forkfileGone reports incusd's per-instance file helper (forkfile)
// exiting while a device update talked to it ("read unix
// @->/proc/self/fd/N/forkfile.sock: read: connection reset by peer", seen
// once in the SIGKILL test's release): nothing changed, and the same
// update succeeds again.
func forkfileGone(err error) bool {
	return err != nil && strings.Contains(err.Error(), "forkfile.sock")
}

// changeError describes why the server refused c. Incus checks a disk's
// source on the host that runs the instance, which on a cluster need not be
// the one this process runs on: that case names the member.
func changeError(c *change, inst *api.Instance, err error) error {
	if !c.release && strings.Contains(strings.ToLower(err.Error()), "missing source path") {
		where := "the server's host"
		if inst.Location != "" && inst.Location != "none" {
			where = "cluster member " + inst.Location
		}
		return fmt.Errorf("%w: %s (alias %q) does not exist on %s, which runs %s: %w",
			mount.ErrSourceMissing, c.source, c.alias, where, inst.Name, err)
	}
	return fmt.Errorf("mount: %s %q on %s: %w", c.verb(), c.alias, inst.Name, err)
}

func (c *change) verb() string {
	if c.release {
		return "release"
	}
	return "acquire"
}

// plan applies c to next, the mounts of inst as they will be written.
func (m *Manager) plan(inst *api.Instance, next map[string]*entry, c *change, instance string) error {
	e := next[c.hash]
	if c.release {
		if e == nil {
			return fmt.Errorf("%w: %q on %s is not attached (holder %s)", mount.ErrNotHeld, c.alias, instance, c.holder)
		}
		if _, ok := e.holders[c.holder]; !ok {
			return fmt.Errorf("%w: holder %s of %q on %s", mount.ErrNotHeld, c.holder, c.alias, instance)
		}
		delete(e.holders, c.holder)
		if len(e.holders) == 0 {
			delete(next, c.hash)
		}
		return nil
	}
	if e == nil {
		dev, at := DevicePrefix+c.hash, mount.DataDir+"/"+c.hash
		if _, ok := inst.Devices[dev]; ok {
			return fmt.Errorf("%w: %s already has a device %s that mount does not manage", mount.ErrInUse, instance, dev)
		}
		if _, ok := inst.ExpandedDevices[dev]; ok {
			return fmt.Errorf("%w: a profile of %s has a device %s", mount.ErrInUse, instance, dev)
		}
		for name, d := range inst.ExpandedDevices {
			if d["type"] == "disk" && d["path"] != "" && path.Clean(d["path"]) == at {
				return fmt.Errorf("%w: device %s of %s already mounts at %s", mount.ErrInUse, name, instance, at)
			}
		}
		if err := checkReadable(inst, c); err != nil {
			return err
		}
		next[c.hash] = &entry{hash: c.hash, alias: c.alias, source: c.source, opts: c.opts, holders: map[string]string{c.holder: m.owner}}
		return nil
	}
	switch {
	case e.alias != c.alias:
		return fmt.Errorf("%w: aliases %q and %q have the same hash %s", mount.ErrInUse, e.alias, c.alias, c.hash)
	case e.source != c.source:
		return fmt.Errorf("%w: %q is attached to %s from %s, not %s", mount.ErrInUse, c.alias, instance, e.source, c.source)
	case e.opts != c.opts:
		return fmt.Errorf("%w: %q is attached to %s with options %+v, not %+v", mount.ErrInUse, c.alias, instance, e.opts, c.opts)
	}
	e.holders[c.holder] = m.owner
	return nil
}

// render returns the instance as it must be written for next, or nil when
// nothing changes, and the hashes attached and detached.
func render(inst *api.Instance, old, next map[string]*entry) (put *api.InstancePut, added, removed []string) {
	p := inst.Writable()
	p.Config = maps.Clone(p.Config)
	p.Devices = maps.Clone(p.Devices)
	if p.Config == nil {
		p.Config = map[string]string{}
	}
	if p.Devices == nil {
		p.Devices = map[string]map[string]string{}
	}
	changed := false
	for _, h := range slices.Sorted(maps.Keys(old)) {
		if next[h] == nil {
			delete(p.Config, ConfigPrefix+h)
			delete(p.Devices, DevicePrefix+h)
			removed = append(removed, h)
			changed = true
		}
	}
	for _, h := range slices.Sorted(maps.Keys(next)) {
		n, key := next[h], ConfigPrefix+h
		if old[h] == nil {
			p.Devices[DevicePrefix+h] = n.device()
			added = append(added, h)
			changed = true
		}
		if v := n.value(); v != inst.Config[key] {
			p.Config[key] = v
			changed = true
		}
	}
	if !changed {
		return nil, nil, nil
	}
	return &p, added, removed
}
