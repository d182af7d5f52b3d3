package incus

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/mount"
	"github.com/lxc/incus/v6/shared/api"
)

// Instance is an Instance of the Incus backend.
type Instance struct {
	e         *Executor
	in        *instance.Instance
	ephemeral bool

	holds executor.MountHolds[mount.Handle]
}

var _ executor.Instance = (*Instance)(nil)

// Name returns the instance name.
func (i *Instance) Name() string { return i.in.Name() }

// Part returns the instance package's handle, for what the interface does
// not cover (PushTar, StopWithin, WaitReady with another Ready, ...).
func (i *Instance) Part() *instance.Instance { return i.in }

// Start starts the instance and waits until it is ready by Config.Ready.
func (i *Instance) Start(ctx context.Context) error {
	if err := i.in.Start(ctx); err != nil {
		return err
	}
	return i.in.WaitReady(ctx, i.e.b.cfg.Ready)
}

// Stop stops the instance, gracefully then by force after the grace period.
func (i *Instance) Stop(ctx context.Context) error {
	return i.in.Stop(ctx)
}

// Restart restarts a running instance, starts a stopped one, and waits
// until it is ready.
func (i *Instance) Restart(ctx context.Context) error {
	st, err := i.in.Status(ctx)
	if err != nil {
		return err
	}
	if st != api.Running && st != api.Ready {
		return i.Start(ctx)
	}
	return i.in.Restart(ctx, i.e.b.cfg.Ready)
}

// Delete forces the instance off and deletes it.
func (i *Instance) Delete(ctx context.Context) error {
	if err := i.in.Delete(ctx); err != nil {
		return err
	}
	i.holds.Clear() // the devices went with the instance
	return nil
}

// IsStarted reports whether the instance runs.
func (i *Instance) IsStarted(ctx context.Context) (bool, error) {
	st, err := i.in.Status(ctx)
	if err != nil {
		return false, err
	}
	return st == api.Running || st == api.Ready, nil
}

// Exec runs cmd (see executor.Runner). A user name must exist
// (EnsureUser): the backend never creates one on the fly.
func (i *Instance) Exec(ctx context.Context, cmd executor.Cmd) (int, error) {
	if len(cmd.Args) == 0 {
		return -1, fmt.Errorf("exec in %s: %w: empty command", i.Name(), executor.ErrInvalid)
	}
	cmd.NoCreateUser = true
	return i.in.Exec(ctx, cmd)
}

// Push writes r to dst.
func (i *Instance) Push(ctx context.Context, dst string, r io.Reader, opts executor.FileOptions) error {
	if _, err := executor.CleanPath(dst); err != nil {
		return err
	}
	return i.in.Push(ctx, dst, r, opts)
}

// Pull copies the regular file src into w.
func (i *Instance) Pull(ctx context.Context, src string, w io.Writer) (executor.FileInfo, error) {
	p, err := executor.CleanPath(src)
	if err != nil {
		return executor.FileInfo{}, err
	}
	info, err := i.in.Pull(ctx, p, w)
	if err != nil {
		return executor.FileInfo{}, err
	}
	info.Path = src
	return info, nil
}

// Stat returns the metadata of p (a symbolic link itself, not followed).
func (i *Instance) Stat(ctx context.Context, p string) (executor.FileInfo, error) {
	cp, err := executor.CleanPath(p)
	if err != nil {
		return executor.FileInfo{}, err
	}
	info, err := i.in.Stat(ctx, cp)
	if err != nil {
		return executor.FileInfo{}, err
	}
	info.Path = p
	if !info.Mode.IsRegular() {
		info.Size = 0
	}
	return info, nil
}

// Mkdir creates dir and its missing parents; an existing directory is
// left as it is.
func (i *Instance) Mkdir(ctx context.Context, dir string, opts executor.FileOptions) error {
	p, err := executor.CleanPath(dir)
	if err != nil {
		return err
	}
	if st, err := i.Stat(ctx, p); err == nil {
		if st.IsDir() {
			return nil
		}
		return fmt.Errorf("instance %s: mkdir %s: %w: exists and is not a directory", i.Name(), dir, executor.ErrAlreadyExists)
	} else if !errors.Is(err, executor.ErrNotFound) {
		return err
	}
	opts.MkdirAll = true
	return i.in.Mkdir(ctx, p, opts)
}

// PushTree copies hostDir's contents into dst, owned by opts' owner.
func (i *Instance) PushTree(ctx context.Context, hostDir, dst string, opts executor.FileOptions) error {
	p, err := executor.CleanPath(dst)
	if err != nil {
		return err
	}
	return i.in.PushTree(ctx, hostDir, p, instance.TreeOptions{Owner: &instance.Owner{UID: opts.UID, GID: opts.GID}})
}

// PullTree copies src's contents into hostDir.
func (i *Instance) PullTree(ctx context.Context, src, hostDir string) error {
	p, err := executor.CleanPath(src)
	if err != nil {
		return err
	}
	return i.in.PullTree(ctx, p, hostDir, instance.TreeOptions{})
}

// EnsureUser returns the user, creating it first when it is missing
// (useradd where the image has it, else /etc/passwd and /etc/group are
// edited); an existing user is returned as it is.
func (i *Instance) EnsureUser(ctx context.Context, name string) (executor.User, error) {
	return i.in.EnsureUser(ctx, name)
}

// Mount attaches source at /data/<hash of alias> (mount.Path), counting
// references on the server.
func (i *Instance) Mount(ctx context.Context, alias, source string, opts executor.MountOptions) (string, error) {
	h, err := i.e.b.mounts.Acquire(ctx, i.Name(), alias, source, opts)
	if err != nil {
		return "", err
	}
	i.holds.Add(alias, h)
	return h.Path, nil
}

// Unmount releases one Mount of alias: one this handle took, or else one
// that the backend's owner holds on the server (taken by an earlier
// process).
func (i *Instance) Unmount(ctx context.Context, alias string) error {
	find := func(ctx context.Context) (mount.Handle, error) {
		return mount.HandleOf(ctx, i.e.b.mounts, i.Name(), alias, i.e.b.cfg.Owner)
	}
	return i.holds.Release(ctx, alias, find, i.e.b.mounts.Release)
}

// Stats reads the instance state API.
func (i *Instance) Stats(ctx context.Context) (executor.Stats, error) {
	return i.in.Stats(ctx)
}
