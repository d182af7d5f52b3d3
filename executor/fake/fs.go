package fake

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/incusexec/incusexec/executor"
)

// File is a file, directory or symlink of an instance's file tree, as seeded
// through Executor.Files and returned by Instance.File.
type File struct {
	// Mode has the type (fs.ModeDir, fs.ModeSymlink, none for a regular
	// file) and the permission bits.
	Mode     fs.FileMode
	UID, GID int
	// Data is a regular file's content, or a symlink's target.
	Data []byte
}

// errReadOnly is what writes under a read-only mount fail with.
var errReadOnly = errors.New("read-only file system")

// errPermission is what the built-in commands report for access an
// unprivileged user does not have.
var errPermission = errors.New("permission denied")

// baseImage is the file tree every instance starts with, before
// Executor.Files.
func baseImage() map[string]*File {
	dir := func(mode fs.FileMode) *File { return &File{Mode: fs.ModeDir | mode} }
	file := func(s string) *File { return &File{Mode: 0o644, Data: []byte(s)} }
	return map[string]*File{
		"/":           dir(0o755),
		"/bin":        dir(0o755),
		"/etc":        dir(0o755),
		"/etc/passwd": file("root:x:0:0:root:/root:/bin/sh\n"),
		"/etc/group":  file("root:x:0:\n"),
		"/home":       dir(0o755),
		"/root":       dir(0o700),
		"/tmp":        dir(fs.ModeSticky | 0o777),
		"/usr":        dir(0o755),
		"/var":        dir(0o755),
	}
}

// perm turns a permission mode as hosts write it (0o1777) into fs bits.
func perm(m fs.FileMode) fs.FileMode {
	out := m & fs.ModePerm
	if m&0o1000 != 0 || m&fs.ModeSticky != 0 {
		out |= fs.ModeSticky
	}
	if m&0o2000 != 0 || m&fs.ModeSetgid != 0 {
		out |= fs.ModeSetgid
	}
	if m&0o4000 != 0 || m&fs.ModeSetuid != 0 {
		out |= fs.ModeSetuid
	}
	return out
}

// hostPath returns the host path behind p when p lies in a mount, with the
// mount (nil otherwise). Callers hold the executor's lock.
func (in *Instance) hostPath(p string) (string, *mountRef) {
	for _, m := range in.mounts {
		if p == m.path {
			return m.source, m
		}
		if rel, ok := strings.CutPrefix(p, m.path+"/"); ok {
			return filepath.Join(m.source, filepath.FromSlash(rel)), m
		}
	}
	return "", nil
}

func notFound(p string) error { return fmt.Errorf("%s: %w", p, executor.ErrNotFound) }

// stat returns the metadata of p. Callers hold the lock.
func (in *Instance) stat(p string) (executor.FileInfo, error) {
	if hp, m := in.hostPath(p); m != nil {
		fi, err := os.Lstat(hp)
		if err != nil {
			return executor.FileInfo{}, hostErr(p, err)
		}
		info := executor.FileInfo{Path: p, Mode: fi.Mode() & (fs.ModeType | fs.ModePerm | fs.ModeSticky | fs.ModeSetgid | fs.ModeSetuid), Size: fi.Size()}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			info.UID, info.GID = int(st.Uid), int(st.Gid)
		}
		if !fi.Mode().IsRegular() {
			info.Size = 0
		}
		return info, nil
	}
	f, ok := in.files[p]
	if !ok {
		return executor.FileInfo{}, notFound(p)
	}
	info := executor.FileInfo{Path: p, Mode: f.Mode, UID: f.UID, GID: f.GID}
	if f.Mode.IsRegular() {
		info.Size = int64(len(f.Data))
	}
	return info, nil
}

func hostErr(p string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return notFound(p)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%s: %w", p, errPermission)
	}
	return fmt.Errorf("%s: %w", p, err)
}

// checkParent makes sure p's parent is a directory, creating missing ones
// (root-owned, 0755) when mkdirAll. Callers hold the lock.
func (in *Instance) checkParent(p string, mkdirAll bool) error {
	dir := path.Dir(p)
	info, err := in.stat(dir)
	switch {
	case errors.Is(err, executor.ErrNotFound) && mkdirAll:
		return in.mkdirAll(dir, executor.FileOptions{})
	case err != nil:
		return err
	case !info.IsDir():
		return fmt.Errorf("%s: not a directory: %w", dir, executor.ErrInvalid)
	}
	return nil
}

// mkdirAll creates dir and its missing parents. Callers hold the lock.
func (in *Instance) mkdirAll(dir string, opts executor.FileOptions) error {
	info, err := in.stat(dir)
	if err == nil {
		if !info.IsDir() {
			return fmt.Errorf("%s: exists and is not a directory: %w", dir, executor.ErrAlreadyExists)
		}
		return nil
	}
	if !errors.Is(err, executor.ErrNotFound) {
		return err
	}
	if err := in.mkdirAll(path.Dir(dir), opts); err != nil {
		return err
	}
	mode := perm(opts.Mode)
	if opts.Mode == 0 {
		mode = 0o755
	}
	if hp, m := in.hostPath(dir); m != nil {
		if m.readOnly {
			return fmt.Errorf("%s: %w", dir, errReadOnly)
		}
		if err := os.Mkdir(hp, mode.Perm()); err != nil {
			return hostErr(dir, err)
		}
		_ = os.Chmod(hp, mode)
		_ = os.Lchown(hp, opts.UID, opts.GID)
		return nil
	}
	in.files[dir] = &File{Mode: fs.ModeDir | mode, UID: opts.UID, GID: opts.GID}
	return nil
}

// writeFile creates or replaces the regular file p. Callers hold the lock.
func (in *Instance) writeFile(p string, data []byte, opts executor.FileOptions) error {
	if info, err := in.stat(p); err == nil && !info.Mode.IsRegular() {
		return fmt.Errorf("%s: exists and is not a regular file: %w", p, executor.ErrInvalid)
	}
	if err := in.checkParent(p, opts.MkdirAll); err != nil {
		return err
	}
	mode := perm(opts.Mode)
	if opts.Mode == 0 {
		mode = 0o644
	}
	if hp, m := in.hostPath(p); m != nil {
		if m.readOnly {
			return fmt.Errorf("%s: %w", p, errReadOnly)
		}
		if err := os.WriteFile(hp, data, mode.Perm()); err != nil {
			return hostErr(p, err)
		}
		_ = os.Chmod(hp, mode)
		_ = os.Lchown(hp, opts.UID, opts.GID)
		return nil
	}
	in.files[p] = &File{Mode: mode, UID: opts.UID, GID: opts.GID, Data: data}
	return nil
}

// readFile returns the content of the regular file p. Callers hold the lock.
func (in *Instance) readFile(p string) ([]byte, executor.FileInfo, error) {
	info, err := in.stat(p)
	if err != nil {
		return nil, info, err
	}
	if !info.Mode.IsRegular() {
		return nil, info, fmt.Errorf("%s: not a regular file: %w", p, executor.ErrInvalid)
	}
	if hp, m := in.hostPath(p); m != nil {
		b, err := os.ReadFile(hp)
		if err != nil {
			return nil, info, hostErr(p, err)
		}
		return b, info, nil
	}
	return append([]byte(nil), in.files[p].Data...), info, nil
}

// children returns the names of the entries of directory dir, sorted.
// Callers hold the lock.
func (in *Instance) children(dir string) ([]string, error) {
	if hp, m := in.hostPath(dir); m != nil {
		ents, err := os.ReadDir(hp)
		if err != nil {
			return nil, hostErr(dir, err)
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return names, nil
	}
	prefix := dir + "/"
	if dir == "/" {
		prefix = "/"
	}
	seen := map[string]bool{}
	for p := range in.files {
		rest, ok := strings.CutPrefix(p, prefix)
		if !ok || rest == "" || strings.Contains(rest, "/") {
			continue
		}
		seen[rest] = true
	}
	for _, m := range in.mounts {
		if rest, ok := strings.CutPrefix(m.path, prefix); ok && rest != "" && !strings.Contains(rest, "/") {
			seen[rest] = true
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// mayAccess reports whether uid/gid may access a file with info for want
// (4 read, 2 write, 1 execute), the way the kernel decides for an
// unprivileged user.
func mayAccess(info executor.FileInfo, uid, gid int, want fs.FileMode) bool {
	if uid == 0 {
		return true
	}
	m := info.Mode.Perm()
	switch {
	case uid == info.UID:
		m >>= 6
	case gid == info.GID:
		m >>= 3
	}
	return m&want == want
}
