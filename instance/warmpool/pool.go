package warmpool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/internal/incusop"
	incus "github.com/lxc/incus/v6/client"
	"github.com/lxc/incus/v6/shared/api"
	"golang.org/x/sync/errgroup"
)

// Configuration keys the pool writes on its instances, beside the
// instance package's labels.
const (
	// LabelState is "ready" once the instance may be claimed.
	LabelState = "user.incusexec.warm"
	// LabelCreator is the holder (see Holder) of the process that made it.
	LabelCreator = "user.incusexec.creator"
	// LabelClaimed is the holder that claimed it; absent while unclaimed.
	LabelClaimed = "user.incusexec.claimed"
	// LabelClaimedAt is when it was claimed (RFC 3339, UTC).
	LabelClaimedAt = "user.incusexec.claimed-at"

	// IDPrefix starts the instance.LabelID of a pool's instances.
	IDPrefix = "warmpool-"
	// StateReady is LabelState's value on a claimable instance.
	StateReady = "ready"

	// KeyCPUAllowance is the Incus key Config.Background lowers while an
	// instance waits in the pool, and BackgroundAllowance its value then:
	// a percentage allowance is a CPU weight (cpu.weight 1 of the default
	// 100 under cgroup v2), a share of contended CPU, not a cap.
	KeyCPUAllowance     = "limits.cpu.allowance"
	BackgroundAllowance = "1%"
)

// Defaults used when Config leaves a field zero.
const (
	DefaultRefill   = 2
	DefaultInterval = 5 * time.Second
	DefaultPrefix   = "wp-"
	// DefaultStaleCreate is how long an instance may stay unready (being
	// created) before GC takes it for the leftover of a crashed creator,
	// when Spec.Ready.Timeout is zero.
	DefaultStaleCreate = 10 * time.Minute
)

var (
	// ErrClosed: the pool was closed.
	ErrClosed = errors.New("warm pool closed")
	// ErrInvalid: bad configuration.
	ErrInvalid = executor.Sentinel("invalid argument", executor.ErrInvalid)
	// ErrEmpty: a Manual pool has no ready instance to hand out.
	ErrEmpty = errors.New("warm pool empty")
)

// Client is the part of the Incus client (incus.InstanceServer) the pool
// calls itself; creation and deletion go through Config.Manager.
type Client interface {
	GetInstance(name string) (*api.Instance, string, error)
	UpdateInstance(name string, inst api.InstancePut, etag string) (incus.Operation, error)
	GetInstancesWithFilter(t api.InstanceType, filters []string) ([]api.Instance, error)
}

// Config configures a Pool. Name, Manager, Client, Spec.Image and Size are
// required.
type Config struct {
	// Name identifies the pool on the server: processes opening pools of
	// the same name (and Manager owner) share their instances. Letters,
	// digits and hyphens.
	Name string
	// Manager creates and deletes the instances; its owner labels them.
	Manager *instance.Manager
	// Client is the same server as Manager's.
	Client Client
	// Spec is the template of every instance (Name and ID must be empty;
	// Prefix defaults to DefaultPrefix). With NoStart the instances are
	// kept created but stopped; the claimer starts them.
	Spec instance.Spec
	// Size is the number of unclaimed instances kept (K).
	Size int
	// Refill bounds concurrent creations (DefaultRefill when zero).
	Refill int
	// MaxAge replaces unclaimed instances older than this; zero keeps them.
	MaxAge time.Duration
	// ClaimTTL lets GC delete claims older than this whose holder is on
	// another host (whose liveness this host cannot see); zero never does.
	// Claims of holders on this host are reclaimed once the process is gone.
	ClaimTTL time.Duration
	// Interval paces the background upkeep: refill checks, GC and waits
	// for instances made by other processes (DefaultInterval when zero).
	Interval time.Duration
	// Logger receives what the pool does; discarded when nil.
	Logger *slog.Logger
	// Background makes the instances boot and wait at the lowest CPU
	// weight (KeyCPUAllowance=BackgroundAllowance), so that refilling the
	// pool takes only CPU the claimed instances and the host leave idle;
	// a claim restores Spec's own value (or the profiles', when Spec has
	// none) in the same update that claims the instance. Containers only:
	// a VM's allowance is not a weight, and VMs are made as Spec says.
	Background bool
	// Manual turns the background upkeep off, for a process that does not
	// stay (a command-line run): the caller calls Fill, GC and Close, and
	// Claim returns ErrEmpty at once instead of waiting when no instance is
	// ready.
	Manual bool
	// Discard makes Close and GC get rid of running ephemeral instances
	// with instance.Discard: they return once the server has taken the
	// stops and deletes them on its own, instead of waiting for them to go
	// (GC counts them deleted).
	Discard bool
}

// Pool is a warm pool. It is safe for concurrent use.
type Pool struct {
	cfg    Config
	id     string
	holder string
	log    *slog.Logger

	wake     chan struct{}
	closedCh chan struct{}
	cancel   context.CancelFunc
	loopDone chan struct{}
	creators sync.WaitGroup
	sem      chan struct{}

	mu       sync.Mutex
	inflight int
	mine     map[string]bool // unclaimed instances this pool made
	queue    []string        // ready instances of this pool, newest last
	changed  chan struct{}   // closed when queue grows
	lastErr  error
	closed   bool
}

// New checks cfg and starts filling the pool in the background.
func New(cfg Config) (*Pool, error) {
	switch {
	case cfg.Manager == nil || cfg.Client == nil:
		return nil, fmt.Errorf("%w: warm pool needs a Manager and a Client", ErrInvalid)
	case cfg.Name == "" || len(cfg.Name) > 40 || executor.CheckName("x"+cfg.Name) != nil:
		return nil, fmt.Errorf("%w: warm pool name %q: 1-40 letters, digits and hyphens", ErrInvalid, cfg.Name)
	case cfg.Spec.Image == "":
		return nil, fmt.Errorf("%w: warm pool %s: Spec.Image is empty", ErrInvalid, cfg.Name)
	case cfg.Spec.Name != "" || cfg.Spec.ID != "":
		return nil, fmt.Errorf("%w: warm pool %s: Spec.Name and Spec.ID are the pool's", ErrInvalid, cfg.Name)
	case cfg.Size < 1:
		return nil, fmt.Errorf("%w: warm pool %s: Size %d, want at least 1", ErrInvalid, cfg.Name, cfg.Size)
	case cfg.Refill < 0 || cfg.MaxAge < 0 || cfg.ClaimTTL < 0 || cfg.Interval < 0:
		return nil, fmt.Errorf("%w: warm pool %s: negative Refill, MaxAge, ClaimTTL or Interval", ErrInvalid, cfg.Name)
	}
	if cfg.Refill == 0 {
		cfg.Refill = DefaultRefill
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Spec.Prefix == "" {
		cfg.Spec.Prefix = DefaultPrefix
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	holder, err := Holder()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	if s, ok := cfg.Client.(incus.InstanceServer); ok {
		cfg.Client = incusop.Shared(s) // operations from many goroutines at once
	}
	p := &Pool{
		cfg: cfg, id: IDPrefix + cfg.Name, holder: holder,
		log:  log.With("pool", cfg.Name),
		wake: make(chan struct{}, 1), closedCh: make(chan struct{}),
		cancel: cancel, loopDone: make(chan struct{}),
		sem:  make(chan struct{}, cfg.Refill),
		mine: map[string]bool{}, changed: make(chan struct{}),
	}
	if cfg.Manual {
		close(p.loopDone)
	} else {
		go p.loop(ctx)
	}
	return p, nil
}

// Holder returns the identity this process writes into its claims:
// host name, PID and the process's start time in clock ticks since boot (so
// that a reused PID is not mistaken for the holder).
func Holder() (string, error) {
	host, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("warm pool holder: %w", err)
	}
	start, err := procStart(os.Getpid())
	if err != nil {
		return "", fmt.Errorf("warm pool holder: %w", err)
	}
	return fmt.Sprintf("%s/%d/%d", host, os.Getpid(), start), nil
}

// procStart reads field 22 (starttime) of /proc/PID/stat.
func procStart(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); starttime is field 22.
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	return strconv.ParseUint(f[19], 10, 64)
}

const creatorTag = "[warmpool creator "

// creatorOf returns the creator of inst: LabelCreator, or the holder in its
// description while it is being created.
func creatorOf(inst api.Instance) string {
	if h := inst.Config[LabelCreator]; h != "" {
		return h
	}
	_, after, ok := strings.Cut(inst.Description, creatorTag)
	if !ok {
		return ""
	}
	h, _, _ := strings.Cut(after, "]")
	return h
}

// holderGone reports whether holder names a process of this host that no
// longer runs. Holders of other hosts, or unparsable ones, are not known
// to be gone.
func holderGone(holder string) bool {
	parts := strings.Split(holder, "/")
	if len(parts) != 3 {
		return false
	}
	host, _ := os.Hostname()
	if parts[0] != host {
		return false
	}
	pid, err1 := strconv.Atoi(parts[1])
	start, err2 := strconv.ParseUint(parts[2], 10, 64)
	if err1 != nil || err2 != nil || pid <= 0 {
		return false
	}
	now, err := procStart(pid)
	if errors.Is(err, os.ErrNotExist) {
		return true
	}
	if err != nil {
		return false
	}
	return now != start || procZombie(pid)
}

func procZombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && strings.HasPrefix(s[i+1:], " Z")
}

// Holder returns the identity the pool writes into its claims.
func (p *Pool) Holder() string { return p.holder }

// ID returns the instance.LabelID value of the pool's instances.
func (p *Pool) ID() string { return p.id }

func (p *Pool) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *Pool) loop(ctx context.Context) {
	defer close(p.loopDone)
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	gcEvery, n := 6, 0
	for {
		p.refill(ctx)
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		case <-t.C:
			if n++; n%gcEvery == 0 || p.cfg.MaxAge > 0 {
				if _, err := p.GC(ctx); err != nil && ctx.Err() == nil {
					p.log.Warn("warm pool gc", "err", err)
				}
			}
		}
	}
}

// members lists the pool's instances on the server.
func (p *Pool) members(ctx context.Context) ([]api.Instance, error) {
	insts, err := incusop.Bind(ctx, p.cfg.Client).GetInstancesWithFilter(api.InstanceTypeAny,
		[]string{"config." + instance.LabelID + "=" + p.id, "config." + executor.OwnerKey + "=" + p.cfg.Manager.Owner()})
	if err != nil {
		return nil, fmt.Errorf("list warm pool %s: %w", p.cfg.Name, err)
	}
	out := insts[:0]
	for _, in := range insts {
		if in.Config[instance.LabelID] == p.id && in.Config[executor.OwnerKey] == p.cfg.Manager.Owner() {
			out = append(out, in)
		}
	}
	return out, nil
}

func (p *Pool) refill(ctx context.Context) {
	insts, err := p.members(ctx)
	if err != nil {
		p.setErr(err)
		return
	}
	avail := 0
	for _, in := range insts {
		if in.Config[LabelState] == StateReady && in.Config[LabelClaimed] == "" {
			avail++
		}
	}
	p.mu.Lock()
	need := p.cfg.Size - avail - p.inflight
	if p.closed || need <= 0 {
		p.mu.Unlock()
		return
	}
	p.inflight += need
	p.creators.Add(need)
	p.mu.Unlock()
	p.log.Debug("warm pool refill", "available", avail, "creating", need)
	for range need {
		go p.create(ctx)
	}
}

func (p *Pool) setErr(err error) {
	p.mu.Lock()
	p.lastErr = err
	p.mu.Unlock()
}

// create makes one instance, within the refill budget, and marks it ready.
func (p *Pool) create(ctx context.Context) {
	defer p.creators.Done()
	name, err := p.createOne(ctx)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inflight--
	if err != nil {
		if ctx.Err() == nil {
			p.lastErr = err
			p.log.Warn("warm pool create", "err", err)
		}
		return
	}
	p.lastErr = nil
	p.mine[name] = true
	p.queue = append(p.queue, name)
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *Pool) createOne(ctx context.Context) (string, error) {
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	defer func() { <-p.sem }()
	spec := p.cfg.Spec
	spec.ID = p.id
	spec.Config = maps.Clone(spec.Config)
	// The creator goes into the description from the start (user.incusexec.
	// keys cannot be set at creation), so that the leftovers of a creator
	// killed mid-creation can be told from creations under way.
	spec.Description = strings.TrimSpace(spec.Description + " " + creatorTag + p.holder + "]")
	if p.cfg.Background && !spec.VM { // a container key: Incus refuses it on a VM
		if spec.Config == nil {
			spec.Config = map[string]string{}
		}
		spec.Config[KeyCPUAllowance] = BackgroundAllowance
	}
	in, err := p.cfg.Manager.Create(ctx, spec)
	if err != nil {
		return "", fmt.Errorf("warm pool %s: create: %w", p.cfg.Name, err)
	}
	_, err = p.update(ctx, in.Name(), func(c map[string]string) bool {
		c[LabelState] = StateReady
		c[LabelCreator] = p.holder
		return true
	})
	if err != nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		_ = in.Delete(dctx)
		return "", fmt.Errorf("warm pool %s: mark %s ready: %w", p.cfg.Name, in.Name(), err)
	}
	p.log.Debug("warm pool instance ready", "instance", in.Name())
	return in.Name(), nil
}

// update applies change to the instance's configuration with
// compare-and-swap on its ETag, re-reading and retrying when something else
// changed the instance in between. change returns false to give up (the
// instance is not in the state the caller wants); update then returns false.
func (p *Pool) update(ctx context.Context, name string, change func(map[string]string) bool) (bool, error) {
	c := incusop.Bind(ctx, p.cfg.Client)
	for attempt := 0; ; attempt++ {
		inst, etag, err := c.GetInstance(name)
		if api.StatusErrorCheck(err, http.StatusNotFound) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("get instance %s: %w", name, err)
		}
		put := inst.Writable()
		put.Config = maps.Clone(put.Config)
		if put.Config == nil {
			put.Config = map[string]string{}
		}
		if !change(put.Config) {
			return false, nil
		}
		op, err := c.UpdateInstance(name, put, etag)
		if api.StatusErrorCheck(err, http.StatusPreconditionFailed) {
			if attempt < 8 {
				continue
			}
			return false, nil
		}
		if api.StatusErrorCheck(err, http.StatusNotFound) {
			return false, nil
		}
		if err == nil {
			err = incusop.Wait(ctx, op, c)
		}
		if err != nil {
			return false, fmt.Errorf("update instance %s: %w", name, err)
		}
		return true, nil
	}
}

// tryClaim claims name for holder when it is a ready, unclaimed instance
// of the pool.
func (p *Pool) tryClaim(ctx context.Context, name, holder string, ok func(map[string]string) bool) (bool, error) {
	return p.update(ctx, name, func(c map[string]string) bool {
		if c[instance.LabelID] != p.id || c[LabelClaimed] != "" || (ok != nil && !ok(c)) {
			return false
		}
		c[LabelClaimed] = holder
		c[LabelClaimedAt] = time.Now().UTC().Format(time.RFC3339)
		// The claimer gets the CPU weight its spec asks for, whichever
		// pool process made the instance and at what weight.
		if v, ok := p.cfg.Spec.Config[KeyCPUAllowance]; ok {
			c[KeyCPUAllowance] = v
		} else {
			delete(c, KeyCPUAllowance)
		}
		return true
	})
}

// Claim hands out one ready instance of the pool, which no other caller (in
// this process or another) gets; it waits for one when the pool is empty,
// until ctx ends. The instance is the caller's: delete it when done.
func (p *Pool) Claim(ctx context.Context) (*instance.Instance, error) {
	ready := func(c map[string]string) bool { return c[LabelState] == StateReady }
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, ErrClosed
		}
		changed := p.changed
		var name string
		if n := len(p.queue); n > 0 {
			name, p.queue = p.queue[n-1], p.queue[:n-1]
		}
		p.mu.Unlock()
		if name != "" {
			ok, err := p.tryClaim(ctx, name, p.holder, ready)
			p.forget(name)
			if err != nil && ctx.Err() != nil {
				return nil, err
			}
			if ok {
				p.poke()
				return p.cfg.Manager.Instance(name), nil
			}
			continue
		}
		// Nothing of our own: instances other processes made.
		insts, err := p.members(ctx)
		if err == nil {
			for _, in := range insts {
				if in.Config[LabelState] != StateReady || in.Config[LabelClaimed] != "" {
					continue
				}
				ok, err := p.tryClaim(ctx, in.Name, p.holder, ready)
				if err != nil && ctx.Err() != nil {
					return nil, err
				}
				if ok {
					p.forget(in.Name)
					p.poke()
					return p.cfg.Manager.Instance(in.Name), nil
				}
			}
		}
		if err == nil && p.cfg.Manual {
			return nil, fmt.Errorf("warm pool %s: %w", p.cfg.Name, ErrEmpty)
		}
		p.poke()
		select {
		case <-ctx.Done():
			p.mu.Lock()
			last := p.lastErr
			p.mu.Unlock()
			if last != nil {
				return nil, fmt.Errorf("warm pool %s: claim: %w (last refill error: %v)", p.cfg.Name, ctx.Err(), last)
			}
			return nil, fmt.Errorf("warm pool %s: claim: %w", p.cfg.Name, ctx.Err())
		case <-p.closedCh:
			return nil, ErrClosed
		case <-changed:
		case <-time.After(p.cfg.Interval):
		}
	}
}

// Fill creates instances until the pool has Size ready, unclaimed ones (as
// far as this process can tell: two processes filling at once may both
// create) and waits for them; it returns the first creation failure, or
// ctx's error. Creations that fail or are cancelled leave nothing behind.
// It is how a Manual pool is filled, and works on any pool.
func (p *Pool) Fill(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	p.lastErr = nil
	p.mu.Unlock()
	p.refill(ctx)
	p.creators.Wait()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("warm pool %s: fill: %w", p.cfg.Name, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastErr
}

// Detach stops the upkeep (cancelling creations under way, which clean up
// after themselves) and leaves the pool's unclaimed instances on the
// server, for other processes opening a pool of the same name to claim and
// a later Close (by a process other than this one, or once this one is
// gone) to delete. A process that fills a pool and exits detaches.
func (p *Pool) Detach() {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.closedCh)
	}
	p.mu.Unlock()
	p.cancel()
	<-p.loopDone
	p.creators.Wait()
	p.mu.Lock()
	p.mine = map[string]bool{}
	p.queue = nil
	p.mu.Unlock()
}

// forget drops name from the pool's own bookkeeping (it was claimed).
func (p *Pool) forget(name string) {
	p.mu.Lock()
	delete(p.mine, name)
	p.mu.Unlock()
}

// GC deletes the pool's instances that nobody will use: claims whose holder
// is a process of this host that is gone (or, with ClaimTTL, claims from
// other hosts older than that), unclaimed instances older than MaxAge, and
// instances left half-created by a crashed creator. It returns the names
// deleted; failures are joined in the error.
func (p *Pool) GC(ctx context.Context) ([]string, error) {
	insts, err := p.members(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	stale := DefaultStaleCreate
	if t := p.cfg.Spec.Ready.Timeout; t > 0 {
		stale = t + 2*time.Minute
	}
	var victims []string
	for _, in := range insts {
		created := in.CreatedAt
		if t, err := time.Parse(time.RFC3339, in.Config[instance.LabelCreated]); err == nil {
			created = t
		}
		claimed := in.Config[LabelClaimed]
		switch {
		case claimed != "":
			at, err := time.Parse(time.RFC3339, in.Config[LabelClaimedAt])
			if holderGone(claimed) || (p.cfg.ClaimTTL > 0 && err == nil && now.Sub(at) > p.cfg.ClaimTTL) {
				p.log.Info("warm pool reclaims instance of a gone holder", "instance", in.Name, "holder", claimed)
				victims = append(victims, in.Name)
			}
		case in.Config[LabelState] == StateReady:
			if p.cfg.MaxAge > 0 && now.Sub(created) > p.cfg.MaxAge {
				// Claim it first: another process may be claiming it now.
				ok, err := p.tryClaim(ctx, in.Name, p.holder, nil)
				if err == nil && ok {
					p.forget(in.Name)
					victims = append(victims, in.Name)
				}
			}
		default:
			if holderGone(creatorOf(in)) || now.Sub(created) > stale {
				victims = append(victims, in.Name)
			}
		}
	}
	return p.deleteAll(ctx, victims)
}

func (p *Pool) deleteAll(ctx context.Context, names []string) ([]string, error) {
	var (
		mu      sync.Mutex
		deleted []string
		errs    []error
	)
	g := new(errgroup.Group)
	g.SetLimit(max(p.cfg.Refill, 4))
	for _, name := range names {
		g.Go(func() error {
			in := p.cfg.Manager.Instance(name)
			var err error
			if p.cfg.Discard {
				err = in.Discard(ctx)
			} else {
				err = in.Delete(ctx)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			} else {
				deleted = append(deleted, name)
			}
			return nil
		})
	}
	_ = g.Wait()
	return deleted, errors.Join(errs...)
}

// Close stops the refill, waits for creations under way to end (they are
// cancelled and clean up after themselves), and deletes the unclaimed
// instances this pool made, or whose creator process is gone. Claimed
// instances are left to their holders. Close may be called more than once.
func (p *Pool) Close(ctx context.Context) error {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.closedCh)
	}
	p.mu.Unlock()
	p.cancel()
	<-p.loopDone
	p.creators.Wait()
	p.mu.Lock()
	mine := maps.Clone(p.mine)
	p.queue = nil
	p.mu.Unlock()
	insts, err := p.members(ctx)
	if err != nil {
		return err
	}
	var victims []string
	for _, in := range insts {
		if in.Config[LabelClaimed] != "" {
			continue
		}
		if !mine[in.Name] && !holderGone(creatorOf(in)) {
			continue
		}
		if in.Config[LabelState] != StateReady {
			// Half made by a creator that is gone: nobody else claims it.
			victims = append(victims, in.Name)
			continue
		}
		ok, err := p.tryClaim(ctx, in.Name, p.holder, nil)
		if err != nil {
			return err
		}
		if ok {
			victims = append(victims, in.Name)
		}
	}
	_, err = p.deleteAll(ctx, victims)
	p.mu.Lock()
	p.mine = map[string]bool{}
	p.mu.Unlock()
	if err != nil {
		return fmt.Errorf("warm pool %s: drain: %w", p.cfg.Name, err)
	}
	p.log.Info("warm pool drained", "deleted", len(victims))
	return nil
}
