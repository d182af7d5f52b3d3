package mount

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Allowlist is the set of host directories under which sources may lie: the
// boundary between a task, which names a source, and the host's files.
// The zero Allowlist allows nothing.
type Allowlist struct {
	roots []string // absolute, cleaned, symlinks resolved
}

// NewAllowlist returns an Allowlist of roots, which must be absolute paths
// of existing directories. Roots are recorded with their symlinks resolved.
func NewAllowlist(roots ...string) (*Allowlist, error) {
	a := &Allowlist{}
	for _, root := range roots {
		if !filepath.IsAbs(root) {
			return nil, fmt.Errorf("%w: allowed root %q is not absolute", ErrInvalid, root)
		}
		resolved, err := filepath.EvalSymlinks(root)
		if err != nil {
			return nil, fmt.Errorf("%w: allowed root %q: %w", ErrInvalid, root, err)
		}
		fi, err := os.Stat(resolved)
		if err != nil {
			return nil, fmt.Errorf("%w: allowed root %q: %w", ErrInvalid, root, err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("%w: allowed root %q is not a directory", ErrInvalid, root)
		}
		a.roots = append(a.roots, resolved)
	}
	return a, nil
}

// Roots returns the allowed roots, symlinks resolved.
func (a *Allowlist) Roots() []string {
	if a == nil {
		return nil
	}
	return append([]string(nil), a.roots...)
}

// Resolve checks source and returns it with symlinks resolved: the path to
// hand to the mounting machinery, so that a symlink swapped in later is not
// followed there. It fails with ErrNotAllowed unless source is absolute,
// exists, is a directory and, resolved, lies under (or is) an allowed root.
//
// Resolve cannot stop a task that can rename directories on the resolved
// path from swapping one for a symlink between Resolve and the mount; see
// the package documentation for that residual risk.
func (a *Allowlist) Resolve(source string) (string, error) {
	if source == "" {
		return "", fmt.Errorf("%w: empty source", ErrNotAllowed)
	}
	if strings.IndexByte(source, 0) >= 0 {
		return "", fmt.Errorf("%w: source %q contains NUL", ErrNotAllowed, source)
	}
	if !filepath.IsAbs(source) {
		return "", fmt.Errorf("%w: source %q is not absolute", ErrNotAllowed, source)
	}
	resolved, err := filepath.EvalSymlinks(filepath.Clean(source))
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is in our message already
		}
		return "", fmt.Errorf("%w: source %q: %w", ErrNotAllowed, source, err)
	}
	if !a.Contains(resolved) {
		if resolved != source {
			return "", fmt.Errorf("%w: source %q resolves to %q, outside the allowed roots %q", ErrNotAllowed, source, resolved, a.Roots())
		}
		return "", fmt.Errorf("%w: source %q is outside the allowed roots %q", ErrNotAllowed, source, a.Roots())
	}
	fi, err := os.Stat(resolved)
	if err != nil {
		return "", fmt.Errorf("%w: source %q: %w", ErrNotAllowed, source, err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("%w: source %q is not a directory", ErrNotAllowed, source)
	}
	return resolved, nil
}

// Contains reports whether the absolute path p, taken literally (symlinks
// are not resolved: it does not touch the file system), is an allowed root
// or lies under one.
func (a *Allowlist) Contains(p string) bool {
	if a == nil || !filepath.IsAbs(p) {
		return false
	}
	p = filepath.Clean(p)
	for _, root := range a.roots {
		if within(root, p) {
			return true
		}
	}
	return false
}

func within(root, p string) bool {
	if p == root {
		return true
	}
	if root == "/" {
		return strings.HasPrefix(p, "/")
	}
	return strings.HasPrefix(p, root+"/")
}
