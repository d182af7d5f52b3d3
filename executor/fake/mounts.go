package fake

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/incusexec/incusexec/executor"
)

type mountRef struct {
	path, source string
	readOnly     bool
	count        int
}

// MountPath returns the in-instance path of alias: /data/ and a hash of the
// alias, the same on every backend.
var MountPath = func(alias string) string {
	sum := sha256.Sum256([]byte(alias))
	return "/data/" + hex.EncodeToString(sum[:])[:16]
}

// allowed resolves source and checks it against the allowlist.
func (e *Executor) allowed(source string) (string, error) {
	if !filepath.IsAbs(source) {
		return "", fmt.Errorf("mount source %q: %w: not absolute", source, executor.ErrNotAllowed)
	}
	real, err := filepath.EvalSymlinks(source)
	if err != nil {
		return "", fmt.Errorf("mount source %s: %w: %v", source, executor.ErrNotAllowed, err)
	}
	if fi, err := os.Stat(real); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("mount source %s: %w: not a directory", source, executor.ErrNotAllowed)
	}
	for _, root := range e.AllowedRoots {
		r, err := filepath.EvalSymlinks(root)
		if err != nil {
			continue
		}
		if real == r || strings.HasPrefix(real, strings.TrimSuffix(r, "/")+"/") {
			return real, nil
		}
	}
	return "", fmt.Errorf("mount source %s: %w: outside the allowed roots %q", source, executor.ErrNotAllowed, e.AllowedRoots)
}

// Mount makes source visible at MountPath(alias), counting references.
func (in *Instance) Mount(ctx context.Context, alias, source string, opts executor.MountOptions) (_ string, err error) {
	defer in.ex.record(OpMount, in.name, []string{alias, source}, &err)
	if err := in.ex.enter(ctx, OpMount); err != nil {
		return "", err
	}
	if alias == "" {
		return "", fmt.Errorf("mount in %s: %w: empty alias", in.name, executor.ErrInvalid)
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
	p := MountPath(alias)
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
