package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/mount"
	"github.com/lxc/incus/v6/shared/api"
)

// IncusInstance is an Instance of the Incus backend.
type IncusInstance struct {
	e         *IncusExecutor
	in        *instance.Instance
	ephemeral bool

	mu      sync.Mutex
	handles map[string][]mount.Handle // by alias, most recent last
}

var _ Instance = (*IncusInstance)(nil)

// Name returns the instance name.
func (i *IncusInstance) Name() string { return i.in.Name() }

// Part returns the instance package's handle, for what the interface does
// not cover (PushTar, StopWithin, WaitReady with another Ready, ...).
func (i *IncusInstance) Part() *instance.Instance { return i.in }

// Start starts the instance and waits until it is ready by Config.Ready.
func (i *IncusInstance) Start(ctx context.Context) error {
	if err := i.in.Start(ctx); err != nil {
		return mapErr(err)
	}
	return mapErr(i.in.WaitReady(ctx, i.e.b.cfg.Ready))
}

// Stop stops the instance, gracefully then by force after the grace period.
func (i *IncusInstance) Stop(ctx context.Context) error {
	return mapErr(i.in.Stop(ctx))
}

// Restart restarts a running instance, starts a stopped one, and waits
// until it is ready.
func (i *IncusInstance) Restart(ctx context.Context) error {
	st, err := i.in.Status(ctx)
	if err != nil {
		return mapErr(err)
	}
	if st != api.Running && st != api.Ready {
		return i.Start(ctx)
	}
	return mapErr(i.in.Restart(ctx, i.e.b.cfg.Ready))
}

// Delete forces the instance off and deletes it.
func (i *IncusInstance) Delete(ctx context.Context) error {
	if err := i.in.Delete(ctx); err != nil {
		return mapErr(err)
	}
	i.mu.Lock()
	i.handles = nil // the devices went with the instance
	i.mu.Unlock()
	return nil
}

// IsStarted reports whether the instance runs.
func (i *IncusInstance) IsStarted(ctx context.Context) (bool, error) {
	st, err := i.in.Status(ctx)
	if err != nil {
		return false, mapErr(err)
	}
	return st == api.Running || st == api.Ready, nil
}

// Exec runs cmd (see Instance.Exec). A user name must exist (CreateUser).
func (i *IncusInstance) Exec(ctx context.Context, cmd Cmd) (int, error) {
	if len(cmd.Args) == 0 {
		return -1, fmt.Errorf("exec in %s: %w: empty command", i.Name(), ErrInvalid)
	}
	code, err := i.in.Exec(ctx, instance.Cmd{
		Args: cmd.Args, Env: cmd.Env, Dir: cmd.Dir, User: cmd.User, Group: cmd.Group, NoCreateUser: true,
		Stdin: cmd.Stdin, Stdout: cmd.Stdout, Stderr: cmd.Stderr, Timeout: cmd.Timeout, Stream: cmd.Stream,
	})
	return code, mapErr(err)
}

// Push writes r to dst.
func (i *IncusInstance) Push(ctx context.Context, dst string, r io.Reader, opts FileOptions) error {
	if _, err := CleanPath(dst); err != nil {
		return err
	}
	return mapErr(i.in.Push(ctx, dst, r, instance.FileOptions{UID: opts.UID, GID: opts.GID, Mode: opts.Mode, Parents: opts.MkdirAll}))
}

// Pull copies the regular file src into w.
func (i *IncusInstance) Pull(ctx context.Context, src string, w io.Writer) (FileInfo, error) {
	p, err := CleanPath(src)
	if err != nil {
		return FileInfo{}, err
	}
	info, err := i.in.Pull(ctx, p, w)
	if err != nil {
		return FileInfo{}, mapErr(err)
	}
	return FileInfo{Path: src, Mode: info.Mode, UID: info.UID, GID: info.GID, Size: info.Size}, nil
}

// Stat returns the metadata of p (a symbolic link itself, not followed).
func (i *IncusInstance) Stat(ctx context.Context, p string) (FileInfo, error) {
	cp, err := CleanPath(p)
	if err != nil {
		return FileInfo{}, err
	}
	st, err := i.in.Stat(ctx, cp)
	if err != nil {
		return FileInfo{}, mapErr(err)
	}
	info := FileInfo{Path: p, Mode: st.Mode, UID: st.UID, GID: st.GID}
	if st.Mode.IsRegular() {
		info.Size = st.Size
	}
	return info, nil
}

// Mkdir creates dir and its missing parents; an existing directory is
// left as it is.
func (i *IncusInstance) Mkdir(ctx context.Context, dir string, opts FileOptions) error {
	p, err := CleanPath(dir)
	if err != nil {
		return err
	}
	if st, err := i.Stat(ctx, p); err == nil {
		if st.IsDir() {
			return nil
		}
		return fmt.Errorf("instance %s: mkdir %s: %w: exists and is not a directory", i.Name(), dir, ErrAlreadyExists)
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	return mapErr(i.in.Mkdir(ctx, p, instance.FileOptions{UID: opts.UID, GID: opts.GID, Mode: opts.Mode, Parents: true}))
}

// PushTree copies hostDir's contents into dst, owned by opts' owner.
func (i *IncusInstance) PushTree(ctx context.Context, hostDir, dst string, opts FileOptions) error {
	p, err := CleanPath(dst)
	if err != nil {
		return err
	}
	return mapErr(i.in.PushDir(ctx, hostDir, p, instance.TreeOptions{Owner: &instance.Owner{UID: opts.UID, GID: opts.GID}}))
}

// PullTree copies src's contents into hostDir.
func (i *IncusInstance) PullTree(ctx context.Context, src, hostDir string) error {
	p, err := CleanPath(src)
	if err != nil {
		return err
	}
	return mapErr(i.in.PullDir(ctx, p, hostDir, instance.TreeOptions{}))
}

// CreateUser creates the user (useradd where the image has it, else
// /etc/passwd and /etc/group are edited) and returns it; an existing user
// is returned as it is.
func (i *IncusInstance) CreateUser(ctx context.Context, name string) (User, error) {
	u, err := i.in.EnsureUser(ctx, name)
	if err != nil {
		return User{}, mapErr(err)
	}
	return User{Name: u.Name, UID: u.UID, GID: u.GID, Home: u.Home}, nil
}

// Mount attaches source at /data/<hash of alias> (mount.Path), counting
// references on the server.
func (i *IncusInstance) Mount(ctx context.Context, alias, source string, opts MountOptions) (string, error) {
	h, err := i.e.b.mounts.Acquire(ctx, i.Name(), alias, source, mount.Options{ReadOnly: opts.ReadOnly, Shift: opts.Shift, Propagation: opts.Propagation})
	if err != nil {
		return "", mapErr(err)
	}
	i.mu.Lock()
	if i.handles == nil {
		i.handles = map[string][]mount.Handle{}
	}
	i.handles[alias] = append(i.handles[alias], h)
	i.mu.Unlock()
	return h.Path, nil
}

// Unmount releases one Mount of alias: one this handle took, or else one
// that the backend's owner holds on the server (taken by an earlier
// process).
func (i *IncusInstance) Unmount(ctx context.Context, alias string) error {
	i.mu.Lock()
	hs := i.handles[alias]
	var h mount.Handle
	local := len(hs) > 0
	if local {
		h = hs[len(hs)-1]
		i.handles[alias] = hs[:len(hs)-1]
	}
	i.mu.Unlock()
	if !local {
		found, err := i.serverHandle(ctx, alias)
		if err != nil {
			return err
		}
		h = found
	}
	if err := i.e.b.mounts.Release(ctx, h); err != nil {
		if local && !errors.Is(err, mount.ErrNotHeld) {
			i.mu.Lock()
			i.handles[alias] = append(i.handles[alias], h)
			i.mu.Unlock()
		}
		return mapErr(err)
	}
	return nil
}

// serverHandle finds a hold of alias by this backend's owner on the server.
func (i *IncusInstance) serverHandle(ctx context.Context, alias string) (mount.Handle, error) {
	ms, err := i.e.b.mounts.Mounts(ctx, i.Name())
	if err != nil {
		return mount.Handle{}, mapErr(err)
	}
	for _, m := range ms {
		if m.Alias != alias {
			continue
		}
		for _, hd := range m.Holders {
			if hd.Owner == i.e.b.cfg.Owner {
				return mount.Handle{Instance: i.Name(), Alias: alias, Path: m.Path, Holder: hd.ID}, nil
			}
		}
	}
	return mount.Handle{}, fmt.Errorf("instance %s: unmount %s: %w", i.Name(), alias, ErrNotMounted)
}

// Stats reads the instance state API.
func (i *IncusInstance) Stats(ctx context.Context) (Stats, error) {
	s, err := i.in.Stats(ctx)
	if err != nil {
		return Stats{}, mapErr(err)
	}
	u := func(n int64) uint64 {
		if n < 0 {
			return 0
		}
		return uint64(n)
	}
	return Stats{CPUs: s.CPUs, CPUTime: s.CPUTime, MemoryUsed: u(s.MemoryUsed), MemoryTotal: u(s.MemoryTotal),
		DiskUsed: u(s.DiskUsed), DiskAvailable: u(s.DiskAvailable)}, nil
}
