package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/mount"
	"github.com/incusexec/incusexec/mount/hostbind"
	"golang.org/x/sys/unix"
)

// Config configures a chroot executor.
type Config struct {
	// Root holds the image (Root/image) and the instances
	// (Root/instances/<name>); created when missing.
	Root string
	// AllowedRoots are the host directories Mount sources must lie under.
	AllowedRoots []string
	// Owner is recorded with every mount hold.
	Owner string
	// Prefix starts generated names ("cx-" when empty).
	Prefix string
	// StopGrace is how long Stop waits after SIGTERM before SIGKILL
	// (5s when zero).
	StopGrace time.Duration
	// Logger receives what the executor does; discarded when nil.
	Logger *slog.Logger
}

// Alias is the image the chroot executor makes: a busybox root file
// system built from the host's busybox-static.
const Alias = "chroot/busybox"

const busybox = "/bin/busybox"

// defaultPath is the PATH commands get.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Executor runs instances as chroot directories on this host. It is safe
// for concurrent use.
type Executor struct {
	cfg    Config
	log    *slog.Logger
	mounts *hostbind.Manager

	mu    sync.Mutex
	insts map[string]*Instance
}

var _ executor.Executor = (*Executor)(nil)

// New returns a chroot executor.
func New(cfg Config) (*Executor, error) {
	if cfg.Root == "" {
		return nil, fmt.Errorf("chroot executor: %w: Root is required", executor.ErrInvalid)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "cx-"
	}
	if cfg.StopGrace == 0 {
		cfg.StopGrace = 5 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Join(cfg.Root, "instances"), 0o755); err != nil {
		return nil, err
	}
	// The instance's root directory is the hostbind instance directory:
	// its data/ is where hostbind mounts, which the chroot sees at /data.
	m, err := hostbind.New(hostbind.Config{Root: filepath.Join(cfg.Root, "instances"), AllowedRoots: cfg.AllowedRoots, Owner: cfg.Owner, Logger: log})
	if err != nil {
		return nil, err
	}
	return &Executor{cfg: cfg, log: log, mounts: m, insts: map[string]*Instance{}}, nil
}

func (e *Executor) imageDir() string { return filepath.Join(e.cfg.Root, "image") }

// Image returns the image alias.
func (e *Executor) Image() string { return Alias }

// Available needs root (chroot, mounts) and busybox-static.
func (e *Executor) Available(ctx context.Context) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: the chroot executor needs root", executor.ErrUnavailable)
	}
	if _, err := os.Stat(busybox); err != nil {
		return fmt.Errorf("%w: %s (package busybox-static): %v", executor.ErrUnavailable, busybox, err)
	}
	return nil
}

// EnsureImage builds the busybox root file system once.
func (e *Executor) EnsureImage(ctx context.Context) error {
	if _, err := os.Stat(filepath.Join(e.imageDir(), "bin", "busybox")); err == nil {
		return nil
	}
	tmp, err := os.MkdirTemp(e.cfg.Root, ".image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := buildImage(ctx, tmp); err != nil {
		return fmt.Errorf("image %s: %w", Alias, err)
	}
	if err := os.Rename(tmp, e.imageDir()); err != nil && !errors.Is(err, fs.ErrExist) && !errors.Is(err, syscall.ENOTEMPTY) {
		return err
	}
	e.log.Info("image built", "dir", e.imageDir())
	return nil
}

// buildImage writes a busybox system into dir.
func buildImage(ctx context.Context, dir string) error {
	if err := os.Chmod(dir, 0o755); err != nil { // the root directory: users traverse it
		return err
	}
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "home", "tmp", "var", "dev", "proc", "sys", "run"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(dir, "tmp"), 0o1777); err != nil {
		return err
	}
	if err := os.Chmod(filepath.Join(dir, "root"), 0o700); err != nil {
		return err
	}
	if err := copyFile(busybox, filepath.Join(dir, "bin", "busybox"), 0o755); err != nil {
		return err
	}
	list, err := exec.CommandContext(ctx, busybox, "--list-full").Output()
	if err != nil {
		return fmt.Errorf("%s --list-full: %w", busybox, err)
	}
	for _, applet := range strings.Fields(string(list)) {
		if applet == "bin/busybox" {
			continue
		}
		if err := os.Symlink(busybox, filepath.Join(dir, applet)); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
	}
	files := map[string]string{
		"etc/passwd":   "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group":    "root:x:0:\nnogroup:x:65534:\n",
		"etc/hostname": "chroot\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			return err
		}
	}
	for _, n := range []struct {
		name         string
		major, minor uint32
	}{{"null", 1, 3}, {"zero", 1, 5}, {"random", 1, 8}, {"urandom", 1, 9}} {
		dev := int(n.major<<8 | n.minor)
		if err := syscall.Mknod(filepath.Join(dir, "dev", n.name), syscall.S_IFCHR|0o666, dev); err != nil {
			return fmt.Errorf("mknod /dev/%s: %w", n.name, err)
		}
		if err := os.Chmod(filepath.Join(dir, "dev", n.name), 0o666); err != nil {
			return err
		}
	}
	return nil
}

// RemoveImage removes the image; instances keep their copies.
func (e *Executor) RemoveImage(ctx context.Context) error {
	return os.RemoveAll(e.imageDir())
}

// Create copies the image into a new instance directory.
func (e *Executor) Create(ctx context.Context, spec executor.Spec) (executor.Instance, error) {
	if len(spec.Profiles) > 0 || len(spec.Devices) > 0 || len(spec.Config) > 0 {
		return nil, fmt.Errorf("create: %w: the chroot executor has no profiles, devices or configuration", executor.ErrInvalid)
	}
	if spec.Name != "" {
		if err := executor.CheckName(spec.Name); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(filepath.Join(e.imageDir(), "bin", "busybox")); err != nil {
		return nil, fmt.Errorf("create: image %s: %w (EnsureImage makes it)", Alias, executor.ErrNotFound)
	}
	name := spec.Name
	for {
		if spec.Name == "" {
			var b [5]byte
			_, _ = rand.Read(b[:])
			name = e.cfg.Prefix + hex.EncodeToString(b[:])
		}
		err := os.Mkdir(e.mounts.InstanceDir(name), 0o755)
		if err == nil {
			break
		}
		if errors.Is(err, fs.ErrExist) {
			if spec.Name != "" {
				return nil, fmt.Errorf("create %s: %w", name, executor.ErrAlreadyExists)
			}
			continue
		}
		return nil, err
	}
	in := &Instance{e: e, name: name, dir: e.mounts.InstanceDir(name), ephemeral: spec.Ephemeral, pgids: map[int]bool{}}
	if err := copyTree(e.imageDir(), in.dir); err != nil {
		_ = e.mounts.RemoveInstance(context.WithoutCancel(ctx), name)
		return nil, fmt.Errorf("create %s: %w", name, err)
	}
	if _, err := e.mounts.CreateInstance(name); err != nil {
		_ = e.mounts.RemoveInstance(context.WithoutCancel(ctx), name)
		return nil, fmt.Errorf("create %s: %w", name, err)
	}
	e.mu.Lock()
	e.insts[name] = in
	e.mu.Unlock()
	e.log.Info("instance created", "name", name, "ephemeral", spec.Ephemeral)
	return in, nil
}

// Statistics returns inst.Stats.
func (e *Executor) Statistics(ctx context.Context, inst executor.Instance) (executor.Stats, error) {
	return inst.Stats(ctx)
}

// List returns the instances on disk.
func (e *Executor) List(ctx context.Context) ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(e.cfg.Root, "instances"))
	if err != nil {
		return nil, err
	}
	var names []string
	for _, d := range ents {
		if d.IsDir() && executor.CheckName(d.Name()) == nil {
			names = append(names, d.Name())
		}
	}
	return names, nil
}

// AutopkgtestArgs returns [alias, "--", "--profile", "default"]: the
// chroot executor has no profiles, and autopkgtest has no chroot driver of
// this kind; the shape is the interface's.
func (e *Executor) AutopkgtestArgs() []string { return []string{Alias, "--", "--profile", "default"} }

// Close deletes every instance this executor holds a handle on (killing
// their processes and removing their mounts).
func (e *Executor) Close(ctx context.Context) error {
	e.mu.Lock()
	insts := make([]*Instance, 0, len(e.insts))
	for _, in := range e.insts {
		insts = append(insts, in)
	}
	e.mu.Unlock()
	var errs []error
	for _, in := range insts {
		errs = append(errs, in.Delete(ctx))
	}
	return errors.Join(errs...)
}

// Instance is a chroot directory with the processes that run in it.
type Instance struct {
	e         *Executor
	name, dir string
	ephemeral bool

	mu      sync.Mutex
	running bool
	gone    bool
	keeper  *exec.Cmd
	pgids   map[int]bool // process groups of the keeper and of running commands
	cpu     time.Duration
	holds   executor.MountHolds[mount.Handle]

	users sync.Mutex // serialises EnsureUser
}

var _ executor.Instance = (*Instance)(nil)

// Name returns the instance name.
func (i *Instance) Name() string { return i.name }

func (i *Instance) errGone(what string) error {
	return fmt.Errorf("instance %s: %s: %w", i.name, what, executor.ErrNotFound)
}

// state returns whether the instance is gone or running.
func (i *Instance) state() (gone, running bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.gone, i.running
}

// Start starts the keeper process, the instance's main process: the
// instance runs while it lives.
func (i *Instance) Start(ctx context.Context) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.gone {
		return i.errGone("start")
	}
	if i.running {
		return nil
	}
	keeper := &exec.Cmd{
		Path:        "/bin/sleep",
		Args:        []string{"sleep", "2147483647"},
		Env:         []string{"PATH=" + defaultPath},
		Dir:         "/",
		SysProcAttr: &syscall.SysProcAttr{Chroot: i.dir, Setpgid: true},
	}
	if err := keeper.Start(); err != nil {
		return fmt.Errorf("instance %s: start: %w", i.name, err)
	}
	i.keeper, i.running = keeper, true
	i.pgids[keeper.Process.Pid] = true
	go func() {
		_ = i.reap(keeper)
		i.mu.Lock()
		defer i.mu.Unlock()
		if i.keeper == keeper {
			i.running, i.keeper = false, nil
		}
	}()
	return nil
}

// reap waits for c's process to exit without reaping it, drops its group
// from pgids, and only then reaps it: a group in pgids is always a process
// of ours (alive or a zombie), never a recycled pid, so signalling the
// groups in pgids under i.mu cannot hit a stranger.
func (i *Instance) reap(c *exec.Cmd) error {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, c.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			break
		}
	}
	i.mu.Lock()
	delete(i.pgids, c.Process.Pid)
	i.mu.Unlock()
	return c.Wait()
}

// Stop sends SIGTERM to every process group of the instance, then SIGKILL
// after the grace period. An ephemeral instance is deleted.
func (i *Instance) Stop(ctx context.Context) error {
	if gone, _ := i.state(); gone {
		return nil
	}
	i.kill(ctx, i.e.cfg.StopGrace)
	if i.ephemeral {
		return i.Delete(ctx)
	}
	return nil
}

// kill ends every process of the instance, politely for grace first.
// Only process groups whose leader is not yet reaped are signalled (see
// reap); a child that outlives its leader after SIGTERM is beyond reach.
func (i *Instance) kill(ctx context.Context, grace time.Duration) {
	signal := func(sig syscall.Signal) (alive bool) {
		i.mu.Lock()
		defer i.mu.Unlock()
		for g := range i.pgids {
			_ = syscall.Kill(-g, sig)
		}
		return len(i.pgids) > 0
	}
	i.mu.Lock()
	i.running, i.keeper = false, nil
	i.mu.Unlock()
	sig := syscall.SIGTERM
	if grace == 0 {
		sig = syscall.SIGKILL
	}
	if !signal(sig) {
		return
	}
	deadline := time.Now().Add(grace)
	for signal(0) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			signal(syscall.SIGKILL)
			deadline = time.Now().Add(time.Hour) // once
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Restart stops (without deleting an ephemeral instance) and starts.
func (i *Instance) Restart(ctx context.Context) error {
	if gone, _ := i.state(); gone {
		return i.errGone("restart")
	}
	i.kill(ctx, i.e.cfg.StopGrace)
	return i.Start(ctx)
}

// Delete kills everything, releases every mount and removes the
// directory (hostbind.RemoveInstance never deletes through a mount).
func (i *Instance) Delete(ctx context.Context) error {
	if gone, _ := i.state(); gone {
		return nil
	}
	i.kill(ctx, 0)
	if err := i.e.mounts.RemoveInstance(ctx, i.name); err != nil {
		return fmt.Errorf("instance %s: delete: %w", i.name, err)
	}
	i.mu.Lock()
	i.gone = true
	i.holds.Clear()
	i.mu.Unlock()
	i.e.mu.Lock()
	delete(i.e.insts, i.name)
	i.e.mu.Unlock()
	i.e.log.Info("instance deleted", "name", i.name)
	return nil
}

// IsStarted reports whether the keeper runs.
func (i *Instance) IsStarted(ctx context.Context) (bool, error) {
	gone, running := i.state()
	if gone {
		return false, i.errGone("is started")
	}
	return running, nil
}

// account is the identity a command runs as.
type account struct {
	uid, gid int
	name     string
	home     string
}

// lookupUser resolves "", "root", a name or a numeric uid in the
// instance's /etc/passwd.
func (i *Instance) lookupUser(u string) (account, error) {
	if u == "" || u == "root" {
		return account{0, 0, "root", "/root"}, nil
	}
	passwd, err := i.readFile("etc/passwd")
	if err != nil {
		return account{}, err
	}
	uid, numeric := -1, false
	if n, err := strconv.Atoi(u); err == nil && n >= 0 {
		uid, numeric = n, true
	}
	for _, line := range strings.Split(string(passwd), "\n") {
		f := strings.Split(line, ":")
		if len(f) < 7 {
			continue
		}
		fu, err1 := strconv.Atoi(f[2])
		fg, err2 := strconv.Atoi(f[3])
		if err1 != nil || err2 != nil {
			continue
		}
		if f[0] == u || (numeric && fu == uid) {
			return account{fu, fg, f[0], f[5]}, nil
		}
	}
	if numeric {
		return account{uid, uid, u, "/"}, nil
	}
	return account{}, fmt.Errorf("instance %s: user %s: %w", i.name, u, executor.ErrNotFound)
}

func (i *Instance) readFile(rel string) ([]byte, error) {
	r, err := os.OpenRoot(i.dir)
	if err != nil {
		return nil, i.errGone("open root")
	}
	defer r.Close()
	return r.ReadFile(rel)
}

// resolve finds argv0 inside the instance as a shell would, or "".
func (i *Instance) resolve(argv0, pathEnv string) string {
	r, err := os.OpenRoot(i.dir)
	if err != nil {
		return ""
	}
	defer r.Close()
	exists := func(p string) bool {
		st, err := r.Lstat(strings.TrimPrefix(path.Clean("/"+p), "/"))
		return err == nil && !st.IsDir()
	}
	if strings.Contains(argv0, "/") {
		if path.IsAbs(argv0) && exists(argv0) {
			return argv0
		}
		return ""
	}
	for _, d := range filepath.SplitList(pathEnv) {
		if p := path.Join("/", d, argv0); exists(p) {
			return p
		}
	}
	return ""
}

// Exec runs cmd chrooted into the instance, as the user, in its own
// process group (which Stop, Delete, timeouts and ctx kill).
func (i *Instance) Exec(ctx context.Context, cmd executor.Cmd) (int, error) {
	gone, running := i.state()
	switch {
	case gone:
		return -1, i.errGone("exec")
	case len(cmd.Args) == 0:
		return -1, fmt.Errorf("exec in %s: %w: empty command", i.name, executor.ErrInvalid)
	case !running:
		return -1, fmt.Errorf("exec in %s: %w", i.name, executor.ErrNotRunning)
	}
	acc, err := i.lookupUser(cmd.User)
	if err != nil {
		return -1, err
	}
	gid := acc.gid
	if cmd.Group != "" {
		if gid, err = i.lookupGroup(cmd.Group); err != nil {
			return -1, err
		}
	}
	env := map[string]string{"PATH": defaultPath, "HOME": acc.home, "USER": acc.name, "LOGNAME": acc.name}
	for k, v := range cmd.Env {
		env[k] = v
	}
	var envList []string
	for k, v := range env {
		envList = append(envList, k+"="+v)
	}
	slices.Sort(envList)
	dir := cmd.Dir
	if dir == "" {
		dir = acc.home
		if st, err := os.Stat(filepath.Join(i.dir, filepath.Clean("/"+dir))); err != nil || !st.IsDir() {
			dir = "/"
		}
	}
	stdout, stderr := cmd.Stdout, cmd.Stderr
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	prog := i.resolve(cmd.Args[0], env["PATH"])
	if prog == "" {
		fmt.Fprintf(stderr, "sh: %s: not found\n", cmd.Args[0])
		return 127, nil
	}
	c := &exec.Cmd{
		Path: prog, Args: cmd.Args, Env: envList, Dir: dir,
		Stdin: cmd.Stdin, Stdout: stdout, Stderr: stderr,
		SysProcAttr: &syscall.SysProcAttr{
			Chroot:     i.dir,
			Setpgid:    true,
			Credential: &syscall.Credential{Uid: uint32(acc.uid), Gid: uint32(gid), Groups: []uint32{}},
		},
		WaitDelay: time.Second,
	}
	i.mu.Lock()
	if !i.running {
		i.mu.Unlock()
		return -1, fmt.Errorf("exec in %s: %w", i.name, executor.ErrNotRunning)
	}
	if err := c.Start(); err != nil {
		i.mu.Unlock()
		if errors.Is(err, fs.ErrNotExist) {
			return -1, fmt.Errorf("exec in %s: %w: %v", i.name, executor.ErrNotFound, err)
		}
		return -1, fmt.Errorf("exec in %s: %w", i.name, err)
	}
	pgid := c.Process.Pid
	i.pgids[pgid] = true
	i.mu.Unlock()

	done := make(chan error, 1)
	go func() { done <- i.reap(c) }()
	var timeout <-chan time.Time
	if cmd.Timeout > 0 {
		t := time.NewTimer(cmd.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	var why error
	select {
	case <-done:
	case <-ctx.Done():
		why = ctx.Err()
	case <-timeout:
		why = fmt.Errorf("exec in %s: %q after %s: %w", i.name, cmd.Args, cmd.Timeout, executor.ErrTimeout)
	}
	if why != nil {
		i.mu.Lock()
		if i.pgids[pgid] { // not yet reaped: still ours
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		}
		i.mu.Unlock()
		<-done
	}
	i.mu.Lock()
	if st := c.ProcessState; st != nil {
		i.cpu += st.UserTime() + st.SystemTime()
	}
	i.mu.Unlock()
	code := -1
	if st := c.ProcessState; st != nil {
		code = st.ExitCode()
		if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
	}
	if why != nil {
		if ctx.Err() != nil {
			return code, fmt.Errorf("exec in %s: %w", i.name, why)
		}
		return code, why
	}
	return code, nil
}

func (i *Instance) lookupGroup(g string) (int, error) {
	if n, err := strconv.Atoi(g); err == nil {
		return n, nil
	}
	group, err := i.readFile("etc/group")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(group), "\n") {
		if f := strings.Split(line, ":"); len(f) >= 3 && f[0] == g {
			return strconv.Atoi(f[2])
		}
	}
	return 0, fmt.Errorf("instance %s: group %s: %w", i.name, g, executor.ErrNotFound)
}

// root opens the instance's directory for traversal-safe file access:
// no path, symlink or ".." leads outside it.
func (i *Instance) root(p, what string) (*os.Root, string, error) {
	cp, err := executor.CleanPath(p)
	if err != nil {
		return nil, "", err
	}
	if gone, _ := i.state(); gone {
		return nil, "", i.errGone(what)
	}
	r, err := os.OpenRoot(i.dir)
	if err != nil {
		return nil, "", i.errGone(what)
	}
	rel := strings.TrimPrefix(cp, "/")
	if rel == "" {
		rel = "."
	}
	return r, rel, nil
}

// fileErr maps file system errors onto the executor's sentinels.
func (i *Instance) fileErr(what, p string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("instance %s: %s %s: %w: %v", i.name, what, p, executor.ErrNotFound, err)
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("instance %s: %s %s: %w: %v", i.name, what, p, executor.ErrAlreadyExists, err)
	}
	return fmt.Errorf("instance %s: %s %s: %w", i.name, what, p, err)
}

func fileMode(m fs.FileMode, def fs.FileMode) fs.FileMode {
	m &= fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky
	if m == 0 {
		return def
	}
	return m
}

// setOwner chowns then chmods (chown clears set-id bits).
func setOwner(r *os.Root, rel string, uid, gid int, mode fs.FileMode) error {
	if err := r.Lchown(rel, uid, gid); err != nil {
		return err
	}
	return r.Chmod(rel, mode)
}

// Push writes r to dst.
func (i *Instance) Push(ctx context.Context, dst string, src io.Reader, opts executor.FileOptions) error {
	r, rel, err := i.root(dst, "push")
	if err != nil {
		return err
	}
	defer r.Close()
	if opts.MkdirAll {
		if err := i.mkdirs(r, path.Dir("/"+rel), executor.FileOptions{}); err != nil {
			return i.fileErr("push", dst, err)
		}
	}
	mode := fileMode(opts.Mode, 0o644)
	f, err := r.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return i.fileErr("push", dst, err)
	}
	_, err = io.Copy(f, ctxReader{ctx, src})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = setOwner(r, rel, opts.UID, opts.GID, mode)
	}
	return i.fileErr("push", dst, err)
}

// Pull copies the regular file src into w.
func (i *Instance) Pull(ctx context.Context, src string, w io.Writer) (executor.FileInfo, error) {
	r, rel, err := i.root(src, "pull")
	if err != nil {
		return executor.FileInfo{}, err
	}
	defer r.Close()
	st, err := r.Lstat(rel)
	if err != nil {
		return executor.FileInfo{}, i.fileErr("pull", src, err)
	}
	if !st.Mode().IsRegular() {
		return executor.FileInfo{}, fmt.Errorf("instance %s: pull %s: %w: not a regular file", i.name, src, executor.ErrInvalid)
	}
	f, err := r.Open(rel)
	if err != nil {
		return executor.FileInfo{}, i.fileErr("pull", src, err)
	}
	defer f.Close()
	if _, err := io.Copy(w, ctxReader{ctx, f}); err != nil {
		return executor.FileInfo{}, fmt.Errorf("instance %s: pull %s: %w", i.name, src, err)
	}
	return info(src, st), nil
}

func info(p string, st fs.FileInfo) executor.FileInfo {
	fi := executor.FileInfo{Path: p, Mode: st.Mode() & (fs.ModeType | fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		fi.UID, fi.GID = int(sys.Uid), int(sys.Gid)
	}
	if st.Mode().IsRegular() {
		fi.Size = st.Size()
	}
	return fi
}

// Stat returns the metadata of p.
func (i *Instance) Stat(ctx context.Context, p string) (executor.FileInfo, error) {
	r, rel, err := i.root(p, "stat")
	if err != nil {
		return executor.FileInfo{}, err
	}
	defer r.Close()
	st, err := r.Lstat(rel)
	if err != nil {
		return executor.FileInfo{}, i.fileErr("stat", p, err)
	}
	return info(p, st), nil
}

// Mkdir creates dir and its missing parents with opts' owner and mode.
func (i *Instance) Mkdir(ctx context.Context, dir string, opts executor.FileOptions) error {
	r, rel, err := i.root(dir, "mkdir")
	if err != nil {
		return err
	}
	defer r.Close()
	return i.fileErr("mkdir", dir, i.mkdirs(r, "/"+rel, opts))
}

// mkdirs creates the missing directories of the absolute path p.
func (i *Instance) mkdirs(r *os.Root, p string, opts executor.FileOptions) error {
	mode := fileMode(opts.Mode, 0o755)
	cur := ""
	for _, part := range strings.Split(strings.Trim(path.Clean(p), "/"), "/") {
		if part == "" || part == "." {
			continue
		}
		cur = path.Join(cur, part)
		st, err := r.Stat(cur)
		switch {
		case err == nil && st.IsDir():
			continue
		case err == nil:
			return fmt.Errorf("/%s: %w (not a directory)", cur, fs.ErrExist)
		case !errors.Is(err, fs.ErrNotExist):
			return err
		}
		if err := r.Mkdir(cur, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		if err := setOwner(r, cur, opts.UID, opts.GID, mode|fs.ModeDir); err != nil {
			return err
		}
	}
	return nil
}

// PushTree copies hostDir's contents into dst.
func (i *Instance) PushTree(ctx context.Context, hostDir, dst string, opts executor.FileOptions) error {
	r, rel, err := i.root(dst, "push tree")
	if err != nil {
		return err
	}
	defer r.Close()
	if err := i.mkdirs(r, "/"+rel, opts); err != nil {
		return i.fileErr("push tree", dst, err)
	}
	err = filepath.WalkDir(hostDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == hostDir {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		sub, _ := filepath.Rel(hostDir, p)
		target := path.Join(rel, filepath.ToSlash(sub))
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case st.IsDir():
			if err := r.Mkdir(target, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
			return setOwner(r, target, opts.UID, opts.GID, st.Mode().Perm())
		case st.Mode()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			_ = r.Remove(target)
			if err := r.Symlink(link, target); err != nil {
				return err
			}
			return r.Lchown(target, opts.UID, opts.GID)
		case st.Mode().IsRegular():
			in, err := os.Open(p)
			if err != nil {
				return err
			}
			defer in.Close()
			out, err := r.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, in)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			return setOwner(r, target, opts.UID, opts.GID, st.Mode().Perm())
		}
		return nil // devices, sockets, FIFOs: skipped
	})
	return i.fileErr("push tree", dst, err)
}

// PullTree copies src's contents into hostDir.
func (i *Instance) PullTree(ctx context.Context, src, hostDir string) error {
	r, rel, err := i.root(src, "pull tree")
	if err != nil {
		return err
	}
	defer r.Close()
	st, err := r.Stat(rel)
	if err != nil {
		return i.fileErr("pull tree", src, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("instance %s: pull tree %s: %w: not a directory", i.name, src, executor.ErrInvalid)
	}
	if err := os.MkdirAll(hostDir, 0o755); err != nil {
		return err
	}
	fsys := r.FS()
	return fs.WalkDir(fsys, rel, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		sub := strings.TrimPrefix(strings.TrimPrefix(p, rel), "/")
		target := filepath.Join(hostDir, filepath.FromSlash(sub))
		st, err := r.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case st.IsDir():
			if err := os.MkdirAll(target, 0o700); err != nil {
				return err
			}
			return os.Chmod(target, st.Mode().Perm())
		case st.Mode()&fs.ModeSymlink != 0:
			link, err := r.Readlink(p)
			if err != nil {
				return err
			}
			_ = os.Remove(target)
			return os.Symlink(link, target)
		case st.Mode().IsRegular():
			in, err := r.Open(p)
			if err != nil {
				return err
			}
			defer in.Close()
			out, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, in)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			return os.Chmod(target, st.Mode().Perm())
		}
		return nil
	})
}

// EnsureUser adds the user and its group to /etc/passwd and /etc/group,
// with a home directory.
func (i *Instance) EnsureUser(ctx context.Context, name string) (executor.User, error) {
	if err := instance.ValidateUserName(name); err != nil {
		return executor.User{}, fmt.Errorf("create user %q: %w", name, executor.ErrInvalid)
	}
	if gone, _ := i.state(); gone {
		return executor.User{}, i.errGone("create user")
	}
	i.users.Lock()
	defer i.users.Unlock()
	if acc, err := i.lookupUser(name); err == nil {
		return executor.User{Name: acc.name, UID: acc.uid, GID: acc.gid, Home: acc.home}, nil
	}
	r, err := os.OpenRoot(i.dir)
	if err != nil {
		return executor.User{}, i.errGone("create user")
	}
	defer r.Close()
	passwd, err := r.ReadFile("etc/passwd")
	if err != nil {
		return executor.User{}, err
	}
	group, err := r.ReadFile("etc/group")
	if err != nil {
		return executor.User{}, err
	}
	uid, gid := nextID(passwd, 2), nextID(group, 2)
	home := "/home/" + name
	passwd = appendLine(passwd, fmt.Sprintf("%s:x:%d:%d::%s:/bin/sh", name, uid, gid, home))
	group = appendLine(group, fmt.Sprintf("%s:x:%d:", name, gid))
	if err := r.WriteFile("etc/group", group, 0o644); err != nil {
		return executor.User{}, err
	}
	if err := r.WriteFile("etc/passwd", passwd, 0o644); err != nil {
		return executor.User{}, err
	}
	if err := i.mkdirs(r, home, executor.FileOptions{UID: uid, GID: gid, Mode: 0o755}); err != nil {
		return executor.User{}, err
	}
	return executor.User{Name: name, UID: uid, GID: gid, Home: home}, nil
}

// nextID is one more than the largest id (field) in 1000-59999, or 1000.
func nextID(b []byte, field int) int {
	next := 1000
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Split(sc.Text(), ":")
		if len(f) <= field {
			continue
		}
		if n, err := strconv.Atoi(f[field]); err == nil && n >= next && n < 60000 {
			next = n + 1
		}
	}
	return next
}

func appendLine(b []byte, line string) []byte {
	if len(b) > 0 && b[len(b)-1] != '\n' {
		b = append(b, '\n')
	}
	return append(b, line+"\n"...)
}

// Mount bind-mounts source at /data/<hash of alias> (hostbind).
func (i *Instance) Mount(ctx context.Context, alias, source string, opts executor.MountOptions) (string, error) {
	if gone, _ := i.state(); gone {
		return "", i.errGone("mount " + alias)
	}
	h, err := i.e.mounts.Acquire(ctx, i.name, alias, source, opts)
	if err != nil {
		return "", err
	}
	i.holds.Add(alias, h)
	return h.Path, nil
}

// Unmount releases one hold of alias: one of this handle's, else one of
// the owner's recorded by hostbind (taken by an earlier process).
func (i *Instance) Unmount(ctx context.Context, alias string) error {
	if gone, _ := i.state(); gone {
		return i.errGone("unmount " + alias)
	}
	find := func(ctx context.Context) (mount.Handle, error) {
		return mount.HandleOf(ctx, i.e.mounts, i.name, alias, i.e.cfg.Owner)
	}
	return i.holds.Release(ctx, alias, find, i.e.mounts.Release)
}

// Stats reads the instance's processes from /proc (its process groups)
// and its directory's size.
func (i *Instance) Stats(ctx context.Context) (executor.Stats, error) {
	i.mu.Lock()
	gone, running, cpu := i.gone, i.running, i.cpu
	groups := make(map[int]bool, len(i.pgids))
	for g := range i.pgids {
		groups[g] = true
	}
	i.mu.Unlock()
	if gone {
		return executor.Stats{}, i.errGone("stats")
	}
	s := executor.Stats{CPUs: runtime.NumCPU(), MemoryTotal: memTotal()}
	if !running {
		return s, nil
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		if _, err := strconv.Atoi(p.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + p.Name() + "/stat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) < 22 {
			continue
		}
		if pgrp, _ := strconv.Atoi(f[2]); !groups[pgrp] {
			continue
		}
		ut, _ := strconv.ParseUint(f[11], 10, 64)
		st, _ := strconv.ParseUint(f[12], 10, 64)
		cpu += time.Duration(ut+st) * time.Second / 100 // USER_HZ
		s.MemoryUsed += rssOf(p.Name())
	}
	s.CPUTime = cpu
	_ = filepath.WalkDir(i.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() && p == filepath.Join(i.dir, "data") {
			return fs.SkipDir // mounts: the host's files, not the instance's
		}
		if info, err := d.Info(); err == nil && info.Mode().IsRegular() {
			s.DiskUsed += uint64(info.Size())
		}
		return nil
	})
	var fsst syscall.Statfs_t
	if syscall.Statfs(i.dir, &fsst) == nil {
		s.DiskAvailable = fsst.Bavail * uint64(fsst.Bsize)
	}
	return s, nil
}

func memTotal() uint64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// copyTree copies the image directory into dst (which exists).
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		sys := st.Sys().(*syscall.Stat_t)
		switch {
		case st.IsDir():
			if rel != "." {
				if err := os.Mkdir(target, 0o700); err != nil {
					return err
				}
			}
			return os.Chmod(target, st.Mode()&(fs.ModePerm|fs.ModeSticky))
		case st.Mode()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case st.Mode()&fs.ModeDevice != 0:
			if err := syscall.Mknod(target, sys.Mode, int(sys.Rdev)); err != nil {
				return err
			}
			return os.Chmod(target, st.Mode().Perm())
		case st.Mode().IsRegular():
			return copyFile(p, target, st.Mode().Perm())
		}
		return nil
	})
}

func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Chmod(dst, mode)
}

// ctxReader stops a copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// rssOf returns the resident memory of process pid in bytes. It reads
// smaps_rollup, which walks the page tables: the rss of /proc/<pid>/stat is
// an approximate per-CPU counter that reads 0 for a small, fresh process.
func rssOf(pid string) uint64 {
	b, err := os.ReadFile("/proc/" + pid + "/smaps_rollup")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Rss:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
