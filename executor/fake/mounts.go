package fake

import (
	"context"
	"fmt"
	"io/fs"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/mount"
)

type mountRef struct {
	path, source string
	readOnly     bool
	count        int
}

// allowed resolves source and checks it against the allowlist, as the
// mount package does for the Incus backend.
func (e *Executor) allowed(source string) (string, error) {
	list, err := mount.NewAllowlist(e.AllowedRoots...)
	if err != nil {
		return "", fmt.Errorf("%w: %w", executor.ErrNotAllowed, err)
	}
	real, err := list.Resolve(source)
	if err != nil {
		return "", fmt.Errorf("%w: %w", executor.ErrNotAllowed, err)
	}
	return real, nil
}

// Mount makes source visible at MountPath(alias), counting references.
func (in *Instance) Mount(ctx context.Context, alias, source string, opts executor.MountOptions) (_ string, err error) {
	defer in.ex.record(OpMount, in.name, []string{alias, source}, &err)
	if err := in.ex.enter(ctx, OpMount); err != nil {
		return "", err
	}
	if err := mount.ValidateAlias(alias); err != nil {
		return "", fmt.Errorf("mount in %s: %w: %w", in.name, executor.ErrInvalid, err)
	}
	real, err := in.ex.allowed(source)
	if err != nil {
		return "", err
	}
	in.ex.mu.Lock()
	defer in.ex.mu.Unlock()
	if err := in.check(false); err != nil {
		return "", err
	}
	if m, ok := in.mounts[alias]; ok {
		if m.source != real || m.readOnly != opts.ReadOnly {
			return "", fmt.Errorf("mount %s in %s: %w with another source or options (%s)", alias, in.name, executor.ErrAlreadyExists, m.source)
		}
		m.count++
		return m.path, nil
	}
	p := mount.Path(alias)
	if _, ok := in.files["/data"]; !ok {
		in.files["/data"] = &File{Mode: fs.ModeDir | 0o755}
	}
	if in.mounts == nil {
		in.mounts = map[string]*mountRef{}
	}
	in.mounts[alias] = &mountRef{path: p, source: real, readOnly: opts.ReadOnly, count: 1}
	if _, ok := in.files[p]; !ok {
		in.files[p] = &File{Mode: fs.ModeDir | 0o755} // the mount point stays, as on Incus
	}
	return p, nil
}

// Unmount releases one Mount of alias.
func (in *Instance) Unmount(ctx context.Context, alias string) (err error) {
	defer in.ex.record(OpUnmount, in.name, []string{alias}, &err)
	if err := in.ex.enter(ctx, OpUnmount); err != nil {
		return err
	}
	in.ex.mu.Lock()
	defer in.ex.mu.Unlock()
	if err := in.check(false); err != nil {
		return err
	}
	m, ok := in.mounts[alias]
	if !ok {
		return fmt.Errorf("unmount %s in %s: %w", alias, in.name, executor.ErrNotMounted)
	}
	if m.count--; m.count == 0 {
		delete(in.mounts, alias)
	}
	return nil
}
