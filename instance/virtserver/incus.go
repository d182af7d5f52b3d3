package virtserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/instance/warmpool"
	"github.com/lxc/incus/v6/shared/api"
)

// Client is the part of the Incus client the Incus testbed calls itself
// (beside what its instance.Manager and warm pool call).
type Client interface {
	warmpool.Client
	GetInstanceState(name string) (*api.InstanceState, string, error)
}

// IncusConfig configures an Incus testbed.
type IncusConfig struct {
	// Manager creates the instances; its owner labels them, so that the
	// owner's GC removes what a killed server left.
	Manager *instance.Manager
	// Client is the same server as Manager's.
	Client Client
	// Spec is the template of the testbed instance: image, profiles,
	// config, VM. Name must be empty. Its Ready defaults to DefaultReady;
	// Ephemeral is set (see Close).
	Spec instance.Spec
	// Spares is how many booted instances of Spec are kept ready for
	// revert (a warm pool of this server's own), booted after open; 0
	// reverts by creating a new instance, -1 means the default, 1.
	Spares int
	// Refill boots a new spare as soon as a revert has taken one, so
	// that every revert finds one booted. Without it the spares booted
	// after open serve the first reverts, and later ones boot their
	// instance when asked. A boot beside the tests costs them about what
	// it saves the revert on a host without CPUs to spare (measured on
	// two, TestBenchVirtServerAgainst, 2026-11-30: refilling made the
	// bench's run 1.4 s longer, 16.75 s against 15.31 s, and a revert
	// that boots takes 1.4-1.7 s); where there are CPUs to spare, refill.
	Refill bool
	// Exec is the argv prefix of the execute command, to which the
	// instance's name, "--" and the command are appended (see Execute).
	Exec []string
	// OutputDir, when set, is a directory on this host under which the
	// testbed makes its output directory (instance.NewOutputDir), shared
	// with its instances at GuestOutputDir: testbed commands then write
	// their output there instead of asking the server for its recorded
	// files, about 0.6x the cost (see instance.OutputDir). Only for a
	// server on this host (its unix socket) and containers: with Spec.VM
	// it is not used. The directory goes at Close.
	OutputDir string
	// Logger receives what the testbed does; discarded when nil.
	Logger *slog.Logger
}

// Incus is a Testbed on an Incus instance: Open creates it from the
// image and waits until systemd and the network are up; Revert replaces it
// by a fresh one (claimed from the warm pool of booted spares the testbed
// keeps, so that a revert costs no boot); Reboot restarts it and tells the
// new boot by the host PID of its init.
type Incus struct {
	cfg  IncusConfig
	log  *slog.Logger
	pool *warmpool.Pool

	filled   chan struct{}      // closed when the first spares are booted (or failed)
	stopFill context.CancelFunc // cancels that first fill (Close)

	out *instance.OutputDir // made by Open when cfg.OutputDir is set

	mu      sync.Mutex
	cur     *instance.Instance
	user    string
	deletes sync.WaitGroup       // background deletions; Close waits
	retired []*instance.Instance // replaced, deleted later (see retire)
}

// DefaultReady waits until systemd has booted and a NIC other than lo has
// a global address (or there is no such NIC).
func DefaultReady(c Client) instance.Ready {
	return instance.Ready{
		Systemd: true,
		Probe: func(ctx context.Context, in *instance.Instance) (bool, string, error) {
			st, _, err := c.GetInstanceState(in.Name())
			if err != nil {
				return false, "", err
			}
			seen := []string{}
			for name, n := range st.Network {
				if name == "lo" || n.Type == "loopback" {
					continue
				}
				for _, a := range n.Addresses {
					if a.Scope == "global" {
						return true, name + " " + a.Address, nil
					}
				}
				seen = append(seen, name+" without a global address")
			}
			if len(seen) == 0 {
				return true, "no network interface", nil
			}
			return false, strings.Join(seen, ", "), nil
		},
		Timeout: 5 * time.Minute,
	}
}

// NewIncus checks cfg and returns the testbed, not yet open.
func NewIncus(cfg IncusConfig) (*Incus, error) {
	if cfg.Manager == nil || cfg.Client == nil {
		return nil, fmt.Errorf("%w: IncusConfig needs Manager and Client", ErrProtocol)
	}
	if cfg.Spec.Image == "" {
		return nil, fmt.Errorf("%w: IncusConfig.Spec.Image is empty", ErrProtocol)
	}
	if cfg.Spec.Name != "" {
		return nil, fmt.Errorf("%w: IncusConfig.Spec.Name must be empty (instances are named by the manager)", ErrProtocol)
	}
	if cfg.Spares < 0 {
		cfg.Spares = 1
	}
	// Ephemeral, as the stock server launches its testbeds: the server
	// deletes them when they stop (Close relies on it).
	cfg.Spec.Ephemeral = true
	if r := cfg.Spec.Ready; !r.Systemd && r.NIC == "" && !r.Agent && r.Probe == nil {
		cfg.Spec.Ready = DefaultReady(cfg.Client)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Incus{cfg: cfg, log: log}, nil
}

func (t *Incus) current() *instance.Instance {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cur
}

// Name is the name of the testbed's current instance ("" when closed).
func (t *Incus) Name() string {
	if in := t.current(); in != nil {
		return in.Name()
	}
	return ""
}

// Open creates the instance and waits until it is ready, then starts
// booting the spares.
func (t *Incus) Open(ctx context.Context) error {
	if t.current() != nil {
		return fmt.Errorf("%w: testbed already open", ErrProtocol)
	}
	if t.cfg.OutputDir != "" && !t.cfg.Spec.VM && t.out == nil {
		d, err := instance.NewOutputDir(t.cfg.OutputDir, GuestOutputDir)
		if err != nil {
			return err
		}
		t.out = &d
		devs := maps.Clone(t.cfg.Spec.Devices)
		if devs == nil {
			devs = map[string]map[string]string{}
		}
		devs[outputDevice] = d.Device()
		t.cfg.Spec.Devices = devs // the spares' too
	}
	in, err := t.cfg.Manager.Create(ctx, t.cfg.Spec)
	if err != nil && t.out != nil && ctx.Err() == nil && !errors.Is(err, instance.ErrNotFound) {
		// The daemon may refuse the device (a project restricting disk
		// devices, a host path it does not see): without it, then.
		t.log.Warn("cannot create the testbed with its output directory; creating it without", "dir", t.out.Host, "err", err)
		if rerr := t.dropOutputDir(); rerr != nil {
			t.log.Warn("remove output directory", "err", rerr)
		}
		in, err = t.cfg.Manager.Create(ctx, t.cfg.Spec)
	}
	if err != nil {
		return err
	}
	t.useOutputDir(ctx, in)
	t.mu.Lock()
	t.cur = in
	t.mu.Unlock()
	if err := t.findUser(ctx); err != nil {
		return err
	}
	if t.cfg.Spares > 0 {
		// Booted after the testbed, not beside it: the first test waits
		// for one boot only. Starting the spare as soon as the testbed's
		// instance had started (its boot overlapping the testbed's while
		// autopkgtest waits for open) made no difference on two CPUs:
		// alternating bench runs (TestBenchVirtServerAgainst, 2026-11-30)
		// gave 15.58 s a run against 15.37 s, open longer by 0.3-0.6 s
		// and the commands beside the spare's boot shorter by as much.
		name, err := poolName()
		if err != nil {
			return err
		}
		spec := t.cfg.Spec
		spec.Prefix = "avs-"
		t.pool, err = warmpool.New(warmpool.Config{
			Name: name, Manager: t.cfg.Manager, Client: t.cfg.Client,
			Spec: spec, Size: t.cfg.Spares, Refill: t.cfg.Spares, Logger: t.log,
			// The spare boots while the first tests run, on the same
			// CPUs: at the lowest weight it takes only what they leave.
			Background: true,
			// Without Refill, the pool is filled once, here.
			Manual: !t.cfg.Refill,
			// Close does not wait for the spares to go (see Close).
			Discard: true,
		})
		if err != nil {
			return fmt.Errorf("spare instances: %w", err)
		}
		filled := make(chan struct{})
		t.filled = filled
		fillCtx, cancel := context.WithCancel(context.Background())
		t.stopFill = cancel
		if t.cfg.Refill {
			close(filled) // the pool's own upkeep boots them
		} else {
			pool := t.pool
			go func() {
				defer close(filled)
				if err := pool.Fill(fillCtx); err != nil && fillCtx.Err() == nil {
					t.log.Warn("spare instances", "err", err)
				}
			}()
		}
	}
	return nil
}

// GuestOutputDir is where the testbed's instances see its output
// directory (IncusConfig.OutputDir): not under /run or /tmp, which the
// instance's systemd mounts over at boot.
const GuestOutputDir = "/var/lib/incusexec/output"

// outputDevice names the output directory's disk device.
const outputDevice = "incusexec-output"

// dropOutputDir takes the output directory's device out of the spec and
// removes the directory.
func (t *Incus) dropOutputDir() error {
	devs := maps.Clone(t.cfg.Spec.Devices)
	delete(devs, outputDevice)
	t.cfg.Spec.Devices = devs
	out := t.out
	t.out = nil
	if out == nil {
		return nil
	}
	return os.RemoveAll(filepath.Dir(out.Host))
}

// useOutputDir has in's commands write their output through the output
// directory, if there is one; when that fails (logged), they go on
// through the server's recorded output.
func (t *Incus) useOutputDir(ctx context.Context, in *instance.Instance) {
	if t.out == nil {
		return
	}
	if err := in.UseOutputDir(ctx, *t.out); err != nil {
		t.log.Warn("testbed commands' output through the server instead", "name", in.Name(), "err", err)
	}
}

func poolName() (string, error) {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "avs-" + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(b), nil
}

// findUser looks for the first account in Debian Policy's range of
// dynamically allocated user ids (1000-59999), the user autopkgtest is
// advised to run tests as.
func (t *Incus) findUser(ctx context.Context) error {
	var out strings.Builder
	code, err := t.Run(ctx, Command{Args: []string{"getent", "passwd"}, Stdout: &out})
	if err != nil {
		return fmt.Errorf("list users: %w", err)
	}
	if code != 0 {
		return fmt.Errorf("list users: getent passwd: exit status %d", code)
	}
	t.user = firstNormalUser(out.String())
	return nil
}

func firstNormalUser(passwd string) string {
	best, bestUID := "", 60000
	for _, line := range strings.Split(passwd, "\n") {
		f := strings.Split(line, ":")
		if len(f) < 3 {
			continue
		}
		uid, err := strconv.Atoi(f[2])
		if err != nil || uid < 1000 || uid > 59999 || uid >= bestUID {
			continue
		}
		best, bestUID = f[0], uid
	}
	return best
}

// Capabilities are the isolation the instance gives and its normal user.
func (t *Incus) Capabilities() []string {
	caps := []string{"isolation-container"}
	if t.cfg.Spec.VM {
		caps = []string{"isolation-machine"}
	}
	if t.user != "" {
		caps = append(caps, "suggested-normal-user="+t.user)
	}
	return caps
}

// claimWait bounds how long a revert waits for a spare of a refilling
// pool (a boot takes seconds) before it creates the instance itself.
const claimWait = 2 * time.Minute

// Revert replaces the instance by a fresh one of the same spec, booted
// and ready: a spare from the warm pool when there is one. The old one is
// deleted at the next revert or at Close (see retire).
func (t *Incus) Revert(ctx context.Context) error {
	old := t.current()
	if old == nil {
		return fmt.Errorf("%w: revert when not open", ErrProtocol)
	}
	var in *instance.Instance
	var err error
	if t.pool != nil {
		select { // the first spares may still be booting
		case <-t.filled:
		case <-ctx.Done():
			return ctx.Err()
		}
		// A refilling pool's Claim waits for a spare as long as it is
		// let: bounded, so that spares that cannot be made (the image
		// gone, say) end in a creation of the testbed's own, whose error
		// says why.
		cctx, cancel := context.WithTimeout(ctx, claimWait)
		in, err = t.pool.Claim(cctx)
		cancel()
		if err != nil && ctx.Err() == nil { // taken and not refilled (ErrEmpty), or none came
			if !errors.Is(err, warmpool.ErrEmpty) {
				t.log.Warn("no spare for the revert; creating the instance", "err", err)
			}
			in, err = t.cfg.Manager.Create(ctx, t.cfg.Spec)
		}
	} else {
		in, err = t.cfg.Manager.Create(ctx, t.cfg.Spec)
	}
	if err != nil {
		return err
	}
	t.useOutputDir(ctx, in)
	t.mu.Lock()
	t.cur = in
	t.mu.Unlock()
	t.retire(old)
	t.log.Debug("reverted", "from", old.Name(), "to", in.Name())
	return nil
}

// retire takes a replaced instance out of the testbed's way: it is left
// as it is and deleted at the next revert or at Close, so at most one
// waits. Stopping a container and deleting its storage (the kernel's
// cleanup of a btrfs subvolume, say) are the heaviest parts of its life
// for the host, and done now they would run beside the next tests. An
// earlier comparison had deleting at once costing the bench's run about
// 2 s; measured again with the first, uncounted run separated
// (TestBenchVirtServerAgainst, 2026-11-30, five runs each) it made no
// difference: 16.46 s a run against 16.41 s.
func (t *Incus) retire(old *instance.Instance) {
	t.mu.Lock()
	older := t.retired
	t.retired = []*instance.Instance{old}
	t.mu.Unlock()
	for _, o := range older {
		t.deleteLater(o)
	}
}

func (t *Incus) deleteLater(in *instance.Instance) {
	t.deletes.Add(1)
	go func() {
		defer t.deletes.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if err := in.Discard(ctx); err != nil {
			t.log.Error("delete replaced instance", "name", in.Name(), "err", err)
		}
	}()
}

// Close gets rid of the instance, the spares and the instance a revert
// replaced: all ephemeral, they are discarded (instance.Discard), so that
// Close returns once the server has taken their forced stops, and the
// server deletes them as they stop, with nobody waiting. A forced stop of
// a container is mostly waiting (0.72-0.79 s, of which 0.14-0.21
// CPU-seconds, for a Debian container here), which autopkgtest, waiting
// for this server to exit after close, need not do; the stock server's
// `incus delete --force` waits. The instances keep their owner label
// until they are gone: should the server fail to delete one, the
// owner's GC does.
func (t *Incus) Close(ctx context.Context) error {
	t.mu.Lock()
	in := t.cur
	t.cur = nil
	retired := t.retired
	t.retired = nil
	t.mu.Unlock()
	// The spares and the testbed go at the same time: each deletion is
	// mostly incusd waiting for an instance to stop.
	var poolErr, delErr error
	var wg sync.WaitGroup
	if pool := t.pool; pool != nil {
		t.pool = nil
		t.stopFill()
		filled := t.filled
		wg.Go(func() {
			<-filled // the first fill ends (cancelled) before the pool closes
			poolErr = pool.Close(ctx)
		})
	}
	retErrs := make([]error, len(retired))
	for i, r := range retired {
		wg.Go(func() { retErrs[i] = r.Discard(ctx) })
	}
	if in != nil {
		delErr = in.Discard(ctx)
	}
	wg.Wait()
	t.deletes.Wait()
	outErr := t.dropOutputDir()
	return errors.Join(append(retErrs, poolErr, delErr, outErr)...)
}

// BootID is the host PID of the instance's init: a new boot is a new
// process (in a container, /proc/sys/kernel/random/boot_id and
// /proc/uptime are the host's without lxcfs, so they do not tell).
func (t *Incus) BootID(ctx context.Context) (string, error) {
	in := t.current()
	if in == nil {
		return "", fmt.Errorf("%w: not open", ErrProtocol)
	}
	st, _, err := t.cfg.Client.GetInstanceState(in.Name())
	if err != nil {
		return "", fmt.Errorf("state of %s: %w", in.Name(), err)
	}
	if st.Pid <= 0 {
		return "", nil
	}
	return strconv.FormatInt(st.Pid, 10), nil
}

// Reboot restarts the instance through the API (trigger) or waits for the
// instance's own reboot, then waits until it is ready.
func (t *Incus) Reboot(ctx context.Context, since string, trigger bool) error {
	in := t.current()
	if in == nil {
		return fmt.Errorf("%w: not open", ErrProtocol)
	}
	if trigger {
		return in.Restart(ctx, t.cfg.Spec.Ready)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		id, err := t.BootID(ctx)
		if err == nil && id != "" && id != since {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not reboot (init still PID %s): %w", in.Name(), since, context.Cause(ctx))
		case <-tick.C:
		}
	}
	return in.WaitReady(ctx, t.cfg.Spec.Ready)
}

// Run runs c as root in the instance.
func (t *Incus) Run(ctx context.Context, c Command) (int, error) {
	in := t.current()
	if in == nil {
		return -1, fmt.Errorf("%w: not open", ErrProtocol)
	}
	return in.Exec(ctx, executor.Cmd{Args: c.Args, Stdin: c.Stdin, Stdout: c.Stdout, Stderr: c.Stderr})
}

// CopyDown copies a host file, keeping its permission bits, or the
// contents of a host directory into the testbed directory (made if
// missing).
func (t *Incus) CopyDown(ctx context.Context, host, tb string, dir bool) error {
	in := t.current()
	if in == nil {
		return fmt.Errorf("%w: not open", ErrProtocol)
	}
	if dir {
		// PushTree makes tb and its parents, and gives tb the host
		// directory's mode, as tar -x of "." does for the stock server.
		return in.PushTree(ctx, filepath.Clean(host), tb, instance.TreeOptions{})
	}
	f, err := os.Open(host)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("copydown %s: not a regular file", host)
	}
	return in.Push(ctx, tb, f, executor.FileOptions{Mode: st.Mode().Perm()})
}

// CopyUp copies a testbed file, or the contents of a testbed directory
// into the host directory (made if missing).
func (t *Incus) CopyUp(ctx context.Context, tb, host string, dir bool) error {
	in := t.current()
	if in == nil {
		return fmt.Errorf("%w: not open", ErrProtocol)
	}
	if dir {
		return in.PullTree(ctx, tb, filepath.Clean(host), instance.TreeOptions{})
	}
	f, err := os.OpenFile(host, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := in.Pull(ctx, tb, f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Execute runs argv as the package's Execute does, in the testbed's
// current instance, which must be the one named: an execute command
// printed before a revert names an instance that is gone. It is the
// execrelay.RunFunc of the relay serving this testbed.
func (t *Incus) Execute(ctx context.Context, name string, argv []string, stdin io.Reader, stdout, stderr io.Writer) int {
	in := t.current()
	if in == nil || in.Name() != name {
		now := "closed"
		if in != nil {
			now = in.Name()
		}
		fmt.Fprintf(stderr, "autopkgtest-virt-incusexec: execute: %s is not the testbed (it is %s now)\n", name, now)
		return ExitAuxFailed
	}
	return Execute(ctx, in, argv, stdin, stdout, stderr)
}

// ExecuteCommand is cfg.Exec, the instance's name and "--".
func (t *Incus) ExecuteCommand() []string {
	return append(append(append([]string{}, t.cfg.Exec...), t.Name()), "--")
}

var _ Testbed = (*Incus)(nil)
