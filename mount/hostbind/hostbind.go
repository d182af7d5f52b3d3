package hostbind

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/mount"
	"golang.org/x/sys/unix"
)

// Config configures a Manager.
type Config struct {
	// Root holds the instances' directories; created when missing.
	Root string
	// AllowedRoots are the host directories under which sources may lie;
	// none means no source is allowed.
	AllowedRoots []string
	// Owner is recorded with every hold; "incusexec" when empty.
	Owner string
	// Logger receives what the manager does; discarded when nil.
	Logger *slog.Logger
}

// Manager is the bind-mount implementation of mount.Mounter.
type Manager struct {
	root  string
	allow *mount.Allowlist
	owner string
	log   *slog.Logger

	mu    sync.Mutex
	locks map[string]*instanceLock

	// onTransition, when set, is told of every bind mount made or removed.
	onTransition func(instance, hash string, attached bool)
}

var (
	_ mount.Mounter   = (*Manager)(nil)
	_ mount.Inspector = (*Manager)(nil)
)

// New returns a Manager for cfg.
func New(cfg Config) (*Manager, error) {
	if !filepath.IsAbs(cfg.Root) {
		return nil, fmt.Errorf("%w: root %q is not absolute", mount.ErrInvalid, cfg.Root)
	}
	if err := os.MkdirAll(cfg.Root, 0o711); err != nil {
		return nil, fmt.Errorf("hostbind: create root: %w", err)
	}
	root, err := filepath.EvalSymlinks(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("hostbind: root: %w", err)
	}
	allow, err := mount.NewAllowlist(cfg.AllowedRoots...)
	if err != nil {
		return nil, err
	}
	m := &Manager{root: root, allow: allow, owner: cfg.Owner, log: cfg.Logger, locks: map[string]*instanceLock{}}
	if m.owner == "" {
		m.owner = "incusexec"
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	return m, nil
}

// InstanceDir is the directory of instance under the root.
func (m *Manager) InstanceDir(instance string) string { return filepath.Join(m.root, instance) }

// DataDir is the host directory to bind to /data inside instance.
func (m *Manager) DataDir(instance string) string { return filepath.Join(m.root, instance, "data") }

// CreateInstance creates the instance's directories (if missing) and
// returns its data directory.
func (m *Manager) CreateInstance(instance string) (string, error) {
	if err := mount.CheckInstance(instance); err != nil {
		return "", err
	}
	if err := os.MkdirAll(m.DataDir(instance), 0o755); err != nil {
		return "", fmt.Errorf("hostbind: create %s: %w", instance, err)
	}
	return m.DataDir(instance), nil
}

// RemoveInstance unmounts everything mounted under the instance's
// directory and removes it, with whatever the instance left in its data
// directory; the instance's handles are released with it. A missing
// instance is not an error.
func (m *Manager) RemoveInstance(ctx context.Context, instance string) error {
	if err := mount.CheckInstance(instance); err != nil {
		return err
	}
	l, err := m.lock(ctx, instance)
	if errors.Is(err, mount.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	defer l.unlock()
	dir := m.InstanceDir(instance)
	mounts, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	slices.SortFunc(mounts, func(a, b string) int { return len(b) - len(a) }) // deepest first
	for _, p := range mounts {
		if err := unmount(p); err != nil {
			return fmt.Errorf("hostbind: remove %s: %w", instance, err)
		}
		m.transition(instance, filepath.Base(p), false)
	}
	// Never delete through a mount: that would delete the host's files.
	if left, err := mountsUnder(dir); err != nil || len(left) > 0 {
		return fmt.Errorf("hostbind: remove %s: still mounted: %q %v", instance, left, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("hostbind: remove %s: %w", instance, err)
	}
	m.log.Info("hostbind: removed instance", "instance", instance, "unmounted", len(mounts))
	return nil
}

// entry is one mount in mounts.json.
type entry struct {
	Alias   string            `json:"alias"`
	Source  string            `json:"source"`
	Options options           `json:"options"`
	Holders map[string]string `json:"holders"`
}

type options struct {
	ReadOnly    bool   `json:"readonly,omitempty"`
	Propagation string `json:"propagation,omitempty"`
}

// Acquire implements mount.Mounter.
func (m *Manager) Acquire(ctx context.Context, instance, alias, source string, opts executor.MountOptions) (mount.Handle, error) {
	if err := mount.CheckAcquire(instance, alias, opts); err != nil {
		return mount.Handle{}, err
	}
	if opts.Shift {
		return mount.Handle{}, fmt.Errorf("%w: %w: hostbind cannot shift ownership (no user namespace to map to)", mount.ErrInvalid, errors.ErrUnsupported)
	}
	resolved, err := m.allow.Resolve(source)
	if err != nil {
		return mount.Handle{}, err
	}
	l, err := m.lock(ctx, instance)
	if err != nil {
		return mount.Handle{}, err
	}
	defer l.unlock()
	st, err := m.read(instance)
	if err != nil {
		return mount.Handle{}, err
	}
	hash := mount.AliasHash(alias)
	h := mount.Handle{Instance: instance, Alias: alias, Path: mount.Path(alias), Holder: mount.NewHolderID()}
	want := options{ReadOnly: opts.ReadOnly, Propagation: opts.Propagation}
	if e := st[hash]; e != nil {
		switch {
		case e.Alias != alias:
			return mount.Handle{}, fmt.Errorf("%w: aliases %q and %q have the same hash %s", mount.ErrInUse, e.Alias, alias, hash)
		case e.Source != resolved:
			return mount.Handle{}, fmt.Errorf("%w: %q is attached to %s from %s, not %s", mount.ErrInUse, alias, instance, e.Source, resolved)
		case e.Options != want:
			return mount.Handle{}, fmt.Errorf("%w: %q is attached to %s with options %+v, not %+v", mount.ErrInUse, alias, instance, e.Options, want)
		}
		e.Holders[h.Holder] = m.owner
		return h, m.write(instance, st)
	}
	target := filepath.Join(m.DataDir(instance), hash)
	if err := m.bind(resolved, target, want); err != nil {
		return mount.Handle{}, fmt.Errorf("hostbind: acquire %q on %s: %w", alias, instance, err)
	}
	st[hash] = &entry{Alias: alias, Source: resolved, Options: want, Holders: map[string]string{h.Holder: m.owner}}
	if err := m.write(instance, st); err != nil {
		return mount.Handle{}, errors.Join(err, unmount(target))
	}
	m.transition(instance, hash, true)
	m.log.Debug("hostbind: attached", "instance", instance, "alias", alias, "source", resolved)
	return h, nil
}

// Release implements mount.Mounter.
func (m *Manager) Release(ctx context.Context, h mount.Handle) error {
	if err := mount.ValidateHandle(h); err != nil {
		return err
	}
	l, err := m.lock(ctx, h.Instance)
	if errors.Is(err, mount.ErrNotFound) {
		return nil // the hold went with the instance
	}
	if err != nil {
		return err
	}
	defer l.unlock()
	st, err := m.read(h.Instance)
	if err != nil {
		return err
	}
	hash := mount.AliasHash(h.Alias)
	e := st[hash]
	if e == nil || e.Alias != h.Alias {
		return fmt.Errorf("%w: %q on %s is not attached (holder %s)", mount.ErrNotHeld, h.Alias, h.Instance, h.Holder)
	}
	if _, ok := e.Holders[h.Holder]; !ok {
		return fmt.Errorf("%w: holder %s of %q on %s", mount.ErrNotHeld, h.Holder, h.Alias, h.Instance)
	}
	delete(e.Holders, h.Holder)
	if len(e.Holders) > 0 {
		return m.write(h.Instance, st)
	}
	target := filepath.Join(m.DataDir(h.Instance), hash)
	if err := unmount(target); err != nil {
		return fmt.Errorf("hostbind: release %q on %s: %w", h.Alias, h.Instance, err)
	}
	_ = os.Remove(target)
	delete(st, hash)
	m.transition(h.Instance, hash, false)
	m.log.Debug("hostbind: detached", "instance", h.Instance, "alias", h.Alias)
	return m.write(h.Instance, st)
}

// Mounts implements mount.Inspector.
func (m *Manager) Mounts(ctx context.Context, instance string) ([]mount.Mount, error) {
	if err := mount.CheckInstance(instance); err != nil {
		return nil, err
	}
	l, err := m.lock(ctx, instance)
	if err != nil {
		return nil, err
	}
	defer l.unlock()
	st, err := m.read(instance)
	if err != nil {
		return nil, err
	}
	out := []mount.Mount{}
	for hash, e := range st {
		mt := mount.Mount{
			Alias: e.Alias, Path: mount.DataDir + "/" + hash, Source: e.Source,
			Options: executor.MountOptions{ReadOnly: e.Options.ReadOnly, Propagation: e.Options.Propagation},
		}
		for _, id := range slices.Sorted(maps.Keys(e.Holders)) {
			mt.Holders = append(mt.Holders, mount.Holder{ID: id, Owner: e.Holders[id]})
		}
		out = append(out, mt)
	}
	slices.SortFunc(out, func(a, b mount.Mount) int { return strings.Compare(a.Alias, b.Alias) })
	return out, nil
}

func (m *Manager) transition(instance, hash string, attached bool) {
	if m.onTransition != nil {
		m.onTransition(instance, hash, attached)
	}
}

// bind mounts source at target, refusing a source that no longer resolves
// to itself or to a place under the allowed roots.
func (m *Manager) bind(source, target string, opts options) error {
	if mounted, err := isMountPoint(target); err == nil && mounted {
		// Left by a crash between mounting and recording.
		if err := unmount(target); err != nil {
			return err
		}
	}
	if err := os.Mkdir(target, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	fd, err := unix.Openat2(unix.AT_FDCWD, source, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return fmt.Errorf("%w: open source %q: %w (changed since it was checked?)", mount.ErrNotAllowed, source, err)
	}
	defer unix.Close(fd)
	fdPath := "/proc/self/fd/" + strconv.Itoa(fd)
	if now, err := os.Readlink(fdPath); err != nil || now != source || !m.allow.Contains(now) {
		return fmt.Errorf("%w: source %q opened as %q (%v)", mount.ErrNotAllowed, source, now, err)
	}
	if err := unix.Mount(fdPath, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s at %s: %w", source, target, err)
	}
	flags := uintptr(unix.MS_PRIVATE)
	switch opts.Propagation {
	case "shared":
		flags = unix.MS_SHARED
	case "slave":
		flags = unix.MS_SLAVE
	case "unbindable":
		flags = unix.MS_UNBINDABLE
	case "rprivate":
		flags = unix.MS_PRIVATE | unix.MS_REC
	case "rshared":
		flags = unix.MS_SHARED | unix.MS_REC
	case "rslave":
		flags = unix.MS_SLAVE | unix.MS_REC
	case "runbindable":
		flags = unix.MS_UNBINDABLE | unix.MS_REC
	}
	if err := unix.Mount("", target, "", flags, ""); err != nil {
		return errors.Join(fmt.Errorf("set propagation of %s: %w", target, err), unmount(target))
	}
	if opts.ReadOnly {
		if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return errors.Join(fmt.Errorf("make %s read-only: %w", target, err), unmount(target))
		}
	}
	return nil
}

// unmount removes the mount at target, detaching it lazily when busy.
func unmount(target string) error {
	err := unix.Unmount(target, 0)
	if errors.Is(err, unix.EBUSY) {
		err = unix.Unmount(target, unix.MNT_DETACH)
	}
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) { // not mounted
		return nil
	}
	if err != nil {
		return fmt.Errorf("unmount %s: %w", target, err)
	}
	return nil
}

func isMountPoint(p string) (bool, error) {
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, p, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS, &st); err != nil {
		return false, err
	}
	return st.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 && st.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0, nil
}

// mountsUnder lists the mount points strictly under dir.
func mountsUnder(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		p := unescapeMountinfo(fields[4])
		if strings.HasPrefix(p, dir+"/") {
			out = append(out, p)
		}
	}
	return out, sc.Err()
}

// unescapeMountinfo decodes the octal escapes (\040 for space...) of
// /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// read loads mounts.json, dropping entries whose bind mount is gone.
func (m *Manager) read(instance string) (map[string]*entry, error) {
	st := map[string]*entry{}
	b, err := os.ReadFile(filepath.Join(m.InstanceDir(instance), "mounts.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("hostbind: read holds of %s: %w", instance, err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("hostbind: read holds of %s: %w", instance, err)
	}
	for hash, e := range st {
		ok := e != nil && mount.AliasHash(e.Alias) == hash && len(e.Holders) > 0
		if ok {
			ok, _ = isMountPoint(filepath.Join(m.DataDir(instance), hash))
		}
		if !ok {
			m.log.Warn("hostbind: dropping a hold record without its mount", "instance", instance, "hash", hash)
			delete(st, hash)
		}
	}
	return st, nil
}

// write replaces mounts.json atomically.
func (m *Manager) write(instance string, st map[string]*entry) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	dir := m.InstanceDir(instance)
	tmp, err := os.CreateTemp(dir, ".mounts-*.json")
	if err == nil {
		_, err = tmp.Write(b)
		if err == nil {
			err = tmp.Sync()
		}
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp.Name(), filepath.Join(dir, "mounts.json"))
		}
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}
	if err != nil {
		return fmt.Errorf("hostbind: record holds of %s: %w", instance, err)
	}
	return nil
}

// instanceLock serialises the goroutines of this process working on one
// instance; the flock of the instance directory serialises processes.
type instanceLock struct {
	ch    chan struct{}
	users int
}

type held struct {
	m    *Manager
	name string
	l    *instanceLock
	dir  *os.File
}

// lock takes the instance's locks, or fails with mount.ErrNotFound when
// the instance does not exist.
func (m *Manager) lock(ctx context.Context, instance string) (*held, error) {
	m.mu.Lock()
	l := m.locks[instance]
	if l == nil {
		l = &instanceLock{ch: make(chan struct{}, 1)}
		m.locks[instance] = l
	}
	l.users++
	m.mu.Unlock()
	h := &held{m: m, name: instance, l: l}
	if ctx.Err() != nil { // select would pick at random when both are ready
		h.drop()
		return nil, fmt.Errorf("hostbind: %s: %w", instance, context.Cause(ctx))
	}
	select {
	case l.ch <- struct{}{}:
	case <-ctx.Done():
		h.drop()
		return nil, fmt.Errorf("hostbind: %s: %w", instance, context.Cause(ctx))
	}
	dir := m.InstanceDir(instance)
	f, err := os.OpenFile(dir, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		h.release()
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s", mount.ErrNotFound, instance)
		}
		return nil, fmt.Errorf("hostbind: open %s: %w", dir, err)
	}
	h.dir = f
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		h.unlock()
		return nil, fmt.Errorf("hostbind: lock %s: %w", dir, err)
	}
	// Another process may have removed the instance while we waited.
	var locked, now unix.Stat_t
	if unix.Fstat(int(f.Fd()), &locked) != nil || unix.Stat(dir, &now) != nil || locked.Ino != now.Ino || locked.Dev != now.Dev {
		h.unlock()
		return nil, fmt.Errorf("%w: %s", mount.ErrNotFound, instance)
	}
	return h, nil
}

func (h *held) unlock() {
	if h.dir != nil {
		_ = h.dir.Close() // drops the flock
	}
	h.release()
}

func (h *held) release() {
	<-h.l.ch
	h.drop()
}

func (h *held) drop() {
	h.m.mu.Lock()
	h.l.users--
	if h.l.users == 0 {
		delete(h.m.locks, h.name)
	}
	h.m.mu.Unlock()
}
