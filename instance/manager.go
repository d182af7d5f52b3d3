package instance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/internal/incusop"
	incus "github.com/lxc/incus/v6/client"
	"github.com/lxc/incus/v6/shared/api"
)

// Configuration keys written on every instance this package creates, so that
// instances leaked by a crashed host can be found (see Manager.GC), beside
// executor.OwnerKey.
const (
	LabelID      = "user.incusexec.id"
	LabelCreated = "user.incusexec.created"
)

// Defaults used when Config leaves a field zero.
const (
	DefaultPrefix       = "ie-"
	DefaultStopGrace    = 30 * time.Second
	DefaultKillGrace    = 5 * time.Second
	DefaultPollInterval = 100 * time.Millisecond
)

// Config configures a Manager. Owner is required; the rest has defaults.
type Config struct {
	// Owner labels every instance created (executor.OwnerKey); GC deletes only
	// instances with this owner.
	Owner string
	// Prefix starts generated instance names (DefaultPrefix when empty).
	Prefix string
	// StopGrace is how long Stop waits for a graceful shutdown before it
	// forces the instance off (DefaultStopGrace when zero).
	StopGrace time.Duration
	// KillGrace is how long a cancelled or timed-out command has between
	// SIGTERM and SIGKILL (DefaultKillGrace when zero).
	KillGrace time.Duration
	// PollInterval paces the waits that events cannot shorten
	// (DefaultPollInterval when zero).
	PollInterval time.Duration
	// CreateUser, when set, replaces the built-in creation of users that
	// commands run as (useradd, or editing /etc/passwd and /etc/group where
	// there is no useradd). It must leave the user in /etc/passwd.
	CreateUser func(ctx context.Context, in *Instance, user string) error
	// KeepExecOutputUpTo, when positive, leaves a recorded exec's output
	// files on the server until its instance is deleted (Incus keeps them
	// in the instance's directory, which goes with it) when together they
	// hold at most this many bytes, instead of deleting them once the
	// output is delivered. The deletion is two requests in the
	// background, which take the server about as long as a short
	// command's own start (measured on two CPUs: 107 ms per command with
	// them, 94 without): worth keeping for instances that run many short
	// commands and are deleted soon, such as a virtualisation server's
	// testbed. Larger output is deleted as usual, and so is the output of
	// a command that did not end normally.
	KeepExecOutputUpTo int64
	// Rand is the source of random name suffixes (crypto/rand when nil).
	Rand io.Reader
	// Logger receives what the manager does; discarded when nil.
	Logger *slog.Logger
}

// Manager creates and finds the instances of one owner on one Incus server
// (the project and target of its client). It is safe for concurrent use.
type Manager struct {
	c      Client
	cfg    Config
	log    *slog.Logger
	events *eventHub
	randMu sync.Mutex
	// placeMu serialises the creation requests the cluster's scheduler
	// places (see create).
	placeMu sync.Mutex
	// cleanups are server-side removals left running after the call that
	// made them returned (a recorded exec's output files); Close waits.
	cleanups sync.WaitGroup
}

// cleanupWait bounds how long Close waits for cleanups; what a hung
// server leaves is GC's (see GC).
const cleanupWait = 30 * time.Second

// later runs f on a goroutine of its own, tracked for Close.
func (m *Manager) later(f func()) {
	m.cleanups.Add(1)
	go func() {
		defer m.cleanups.Done()
		f()
	}()
}

// waitCleanups waits for the cleanups under way, at most d; it reports
// whether they all ended.
func (m *Manager) waitCleanups(d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		m.cleanups.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// New returns a Manager that talks to the server through c.
func New(c Client, cfg Config) (*Manager, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: nil client", ErrInvalid)
	}
	if s, ok := c.(incus.InstanceServer); ok {
		c = incusop.Shared(s) // operations from many goroutines at once
	}
	if err := validateLabel("owner", cfg.Owner); err != nil {
		return nil, err
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if err := validatePrefix(cfg.Prefix); err != nil {
		return nil, err
	}
	if cfg.StopGrace == 0 {
		cfg.StopGrace = DefaultStopGrace
	}
	if cfg.KillGrace == 0 {
		cfg.KillGrace = DefaultKillGrace
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.StopGrace < 0 || cfg.KillGrace < 0 {
		return nil, fmt.Errorf("%w: negative grace period", ErrInvalid)
	}
	if cfg.KeepExecOutputUpTo < 0 {
		return nil, fmt.Errorf("%w: negative KeepExecOutputUpTo %d", ErrInvalid, cfg.KeepExecOutputUpTo)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Manager{c: c, cfg: cfg, log: log}
	m.events = newEventHub(c, log)
	// Connected from the start and kept: the Incus client waits for every
	// operation through an event listener, and reuses a live connection
	// instead of opening a websocket per operation.
	m.events.connect()
	return m, nil
}

// Close waits for the server-side cleanups Exec left running (the output
// files of recorded execs: Exec returns once the output is delivered, and
// removes the files behind it), at most 30 s, then releases the manager's
// event listener. Instances are left alone; handles keep working, at the
// cost of an event connection per operation. Call it once the calls made
// through the manager have returned.
func (m *Manager) Close() error {
	if !m.waitCleanups(cleanupWait) {
		m.log.Warn("cleanups still running after " + cleanupWait.String() + "; GC removes what they leave")
	}
	m.events.close()
	return nil
}

// Owner returns the owner label of the manager's instances.
func (m *Manager) Owner() string { return m.cfg.Owner }

// Spec describes an instance to create.
type Spec struct {
	// Name is the instance name; empty to generate Prefix plus random hex
	// digits, retried with a new suffix when the server reports a conflict.
	Name string
	// Prefix overrides Config.Prefix for a generated name.
	Prefix string
	// ID is recorded as LabelID (the task or instance ID of the host); the
	// name when empty.
	ID string
	// Image is a local image alias or fingerprint. A string of at least 12
	// lower-case hex digits is taken as a fingerprint (or its prefix).
	Image string
	// VM asks for a virtual machine instead of a container.
	VM bool
	// Profiles to apply, in order; nil means ["default"], an empty non-nil
	// slice means none.
	Profiles []string
	// Config and Devices are the instance's own (local) configuration. Keys
	// under user.incusexec. are reserved.
	Config  map[string]string
	Devices map[string]map[string]string
	// Ephemeral instances are deleted by the server when they stop.
	Ephemeral bool
	// Target is where on a cluster the instance goes: a member's name,
	// "@group" for any member of a cluster group, or "" to let the
	// cluster's scheduler choose (the member with the fewest instances).
	// Instance.Location reports the member chosen. A Manager sends the
	// requests the scheduler places one at a time, so that a burst of
	// them spreads over the members; bursts from several processes at once
	// can still land on one member (target members explicitly then).
	Target string
	// Description of the instance.
	Description string
	// NoStart leaves the instance stopped after creation (files can be
	// pushed into it before Start).
	NoStart bool
	// Ready is waited for after the start (see Instance.WaitReady).
	Ready Ready
}

// Create creates an instance from spec, starts it (unless NoStart) and waits
// until it is ready by spec.Ready. When anything fails, or ctx ends, the
// instance is deleted again: Create leaves an instance that is up, or none.
//
// A creation that fails because the server has a network out of service
// (status 503, `Network "x" unavailable on this server`: incusd failed to
// start the network when it started, seen on a busy host after a restart,
// and tries again a minute later) is made again with the instance stopped,
// whose start is then retried, after 100 ms doubling up to 2 s, until ctx
// ends; no other failure is retried.
func (m *Manager) Create(ctx context.Context, spec Spec) (*Instance, error) {
	req, err := m.request(spec)
	if err != nil {
		return nil, err
	}
	prefix := spec.Prefix
	if prefix == "" {
		prefix = m.cfg.Prefix
	} else if err := validatePrefix(prefix); err != nil {
		return nil, err
	}
	c := m.c
	if spec.Target != "" {
		t, ok := c.(targeter)
		if !ok {
			return nil, fmt.Errorf("%w: target %q: the client cannot choose a cluster member", ErrInvalid, spec.Target)
		}
		c = t.UseTarget(spec.Target)
	}
	const attempts = 8
	var retry networkRetry
	startLater := false
	for attempt := 1; ; attempt++ {
		name := spec.Name
		if name == "" {
			m.randMu.Lock()
			name, err = randomName(m.cfg.Rand, prefix)
			m.randMu.Unlock()
			if err != nil {
				return nil, err
			}
		}
		req.Name = name
		req.Config[LabelID] = spec.ID
		if spec.ID == "" {
			req.Config[LabelID] = name
		}
		req.Config[LabelCreated] = time.Now().UTC().Format(time.RFC3339)
		err = m.create(ctx, c, req, spec.Target == "" || strings.HasPrefix(spec.Target, "@"))
		if err == nil {
			break
		}
		if errors.Is(err, ErrAlreadyExists) && spec.Name == "" && attempt < attempts {
			m.log.Debug("instance name taken; retrying", "name", name)
			continue
		}
		if isNetworkUnavailable(err) && ctx.Err() == nil && req.Start {
			// The creation's start was refused for the network:
			// create the next one stopped and wait at its start,
			// rather than create and delete one every few seconds
			// for as long as incusd takes (a minute).
			m.log.Info("network unavailable; creating the instance stopped, to start it when the network is back", "name", name, "err", err)
			retry.refused, req.Start, startLater = err, false, true
			attempt--
			continue
		}
		// Any other refusal for the network waits and tries again, as
		// a start does (see networkRetry); other failures end here.
		if err := retry.wait(ctx, err, m.log, "network unavailable; retrying creation", "name", name); err != nil {
			return nil, err
		}
		attempt--
	}
	in := m.Instance(req.Name)
	if startLater {
		if err := in.start(ctx); err != nil {
			return nil, errors.Join(wrapErr(err, in.name, "start"), in.discard(ctx))
		}
	}
	m.log.Info("instance created", "name", in.name, "image", spec.Image, "started", !spec.NoStart)
	if spec.NoStart || spec.Ready.isZero() {
		return in, nil
	}
	if err := in.WaitReady(ctx, spec.Ready); err != nil {
		return nil, errors.Join(err, in.discard(ctx))
	}
	return in, nil
}

// Backoff of the retries while a network is unavailable.
const (
	networkRetryStart = 100 * time.Millisecond
	networkRetryMax   = 2 * time.Second
)

// networkRetry paces the tries of a creation or start that the server
// refuses because the instance's network is out of service: incusd starts
// the network again a minute after a failed start, so they go on, 100 ms
// apart doubling up to 2 s, as long as ctx allows. Its zero value is
// ready to use.
type networkRetry struct {
	next    time.Duration
	refused error // the server's last refusal for the network
}

// wait returns err itself when it is not a refusal for the network or ctx
// has ended (with, when ctx ended during a retry, the refusal that was
// being retried); otherwise it logs msg with args, waits for the next try
// and returns nil, or err with ctx's cause when ctx ends first.
func (r *networkRetry) wait(ctx context.Context, err error, log *slog.Logger, msg string, args ...any) error {
	if !isNetworkUnavailable(err) || ctx.Err() != nil {
		if r.refused != nil && ctx.Err() != nil && !isNetworkUnavailable(err) {
			// ctx ended during a retry: say why it was retried.
			return fmt.Errorf("%w (then: %w)", r.refused, err)
		}
		return err
	}
	r.refused = err
	if r.next == 0 {
		r.next = networkRetryStart
	}
	log.Info(msg, append(args, "in", r.next, "err", err)...)
	t := time.NewTimer(r.next)
	defer t.Stop()
	select {
	case <-t.C:
		r.next = min(2*r.next, networkRetryMax)
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w (%w)", err, context.Cause(ctx))
	}
}

// isNetworkUnavailable reports the error a daemon gives, with status 503,
// when an instance's NIC needs a network it has out of service (its start
// failed when the daemon started): `Network "x" unavailable on this
// server`. When the failure comes from the start inside the creation
// operation, the status is lost and only the message says it.
func isNetworkUnavailable(err error) bool {
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "network ") && strings.Contains(msg, "unavailable on this server")
}

// request validates spec and builds the creation request, without a name.
func (m *Manager) request(spec Spec) (api.InstancesPost, error) {
	if spec.Name != "" {
		if err := checkName(spec.Name); err != nil {
			return api.InstancesPost{}, err
		}
	}
	if spec.ID != "" {
		if err := validateLabel("instance ID", spec.ID); err != nil {
			return api.InstancesPost{}, err
		}
	}
	if spec.Image == "" {
		return api.InstancesPost{}, fmt.Errorf("%w: no image", ErrInvalid)
	}
	cfg := map[string]string{}
	for k, v := range spec.Config {
		if strings.HasPrefix(k, "user.incusexec.") {
			return api.InstancesPost{}, fmt.Errorf("%w: config key %q is reserved", ErrInvalid, k)
		}
		cfg[k] = v
	}
	cfg[executor.OwnerKey] = m.cfg.Owner
	profiles := spec.Profiles
	if profiles == nil {
		profiles = []string{"default"}
	}
	devices := map[string]map[string]string{}
	for k, v := range spec.Devices {
		devices[k] = maps.Clone(v)
	}
	src := api.InstanceSource{Type: "image"}
	if isFingerprint(spec.Image) {
		src.Fingerprint = spec.Image
	} else {
		src.Alias = spec.Image
	}
	typ := api.InstanceTypeContainer
	if spec.VM {
		typ = api.InstanceTypeVM
	}
	return api.InstancesPost{
		InstancePut: api.InstancePut{
			Profiles:    profiles,
			Config:      cfg,
			Devices:     devices,
			Ephemeral:   spec.Ephemeral,
			Description: spec.Description,
		},
		Source: src,
		Type:   typ,
		Start:  !spec.NoStart,
	}, nil
}

func isFingerprint(s string) bool {
	if len(s) < 12 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// create sends one creation request. A failure after the server accepted it
// (a start that fails, ctx ending) deletes the instance, unless the failure
// is a name conflict, where the instance is somebody else's.
func (m *Manager) create(ctx context.Context, c Client, req api.InstancesPost, scheduled bool) error {
	// Unbound: see Instance.changeState.
	if scheduled {
		// A cluster places an instance on the member with the fewest
		// instances, counting creations in flight only once their
		// operation exists: requests sent at once all see the same counts
		// and land on the same member (seen: 5 of 6 on one member, none on
		// another). One request at a time, each returning once its
		// operation exists, spreads them; the creations still run in
		// parallel.
		m.placeMu.Lock()
	}
	op, err := c.CreateInstance(req)
	if scheduled {
		m.placeMu.Unlock()
	}
	if err == nil {
		err = incusop.Wait(ctx, op, c)
	}
	if err == nil {
		return nil
	}
	if containsFold(err.Error(), "image not provided") {
		// What the server says when an alias does not resolve.
		err = fmt.Errorf("%w: image %q: %w", ErrNotFound, req.Source.Alias+req.Source.Fingerprint, err)
	}
	err = wrapErr(err, req.Name, "create")
	if errors.Is(err, ErrAlreadyExists) {
		return err
	}
	if op != nil && ctx.Err() != nil {
		// The server may still be creating it: let it finish, then delete.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		_ = op.WaitContext(wctx)
		cancel()
	}
	if cerr := m.Instance(req.Name).discard(ctx); cerr != nil && !errors.Is(cerr, ErrNotFound) {
		err = errors.Join(err, cerr)
	}
	return err
}

// Instance returns a handle for the instance called name. It does not check
// that the instance exists; Get does.
func (m *Manager) Instance(name string) *Instance {
	return &Instance{m: m, name: name}
}

// Get returns a handle for an existing instance of the manager's owner, or
// an error wrapping ErrNotFound. An instance labelled with another owner (or
// none) is not found: a name that came from a task or a host's request
// cannot reach another owner's instance through Get.
func (m *Manager) Get(ctx context.Context, name string) (*Instance, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	inst, _, err := incusop.Bind(ctx, m.c).GetInstance(name)
	if err != nil {
		return nil, wrapErr(err, name, "get")
	}
	if owner := inst.Config[executor.OwnerKey]; owner != m.Owner() {
		return nil, fmt.Errorf("instance %s: get: %w (owned by %q, not %q)", name, ErrNotFound, owner, m.Owner())
	}
	return m.Instance(name), nil
}

// discard force-deletes the instance after a failed creation, on a context
// that outlives ctx's cancellation.
func (in *Instance) discard(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	err := in.delete(ctx, 0)
	if err != nil {
		in.m.log.Warn("cannot delete instance after failed creation", "name", in.name, "err", err)
	}
	return err
}

var _ Client = incus.InstanceServer(nil)
