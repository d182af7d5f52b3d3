package instance

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/pkg/sftp"
)

// Owner is a uid and gid.
type Owner struct{ UID, GID int }

// TreeOptions says who owns the entries of a pushed or pulled tree.
type TreeOptions struct {
	// Owner, when set, owns every entry written. When nil, a push keeps the
	// owners recorded in the tar stream (or of the host files), and a pull
	// to a host directory leaves files owned by the calling process: the
	// instance's ids mean nothing on the host.
	Owner *Owner
}

// entryPath turns the name of a tar entry into a clean path relative to the
// root it is extracted under ("." for the root itself). Names that climb out
// of the root are rejected.
func entryPath(name string) (string, error) {
	if name == "" || strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("%w: tar entry name %q", ErrInvalid, name)
	}
	p := path.Clean("/" + name)
	for _, elem := range strings.Split(name, "/") {
		if elem == ".." {
			return "", fmt.Errorf("%w: tar entry %q leaves the tree", ErrInvalid, name)
		}
	}
	if p == "/" {
		return ".", nil
	}
	return p[1:], nil
}

// PushTar unpacks the tar stream r under the directory dst (absolute) in the
// instance, creating dst and its parents. Directories, regular files,
// symbolic and hard links are written with their modes, modification times
// and (see TreeOptions) owners; other entry types are skipped. An entry named
// "./" gives dst itself its mode and owner.
func (in *Instance) PushTar(ctx context.Context, dst string, r io.Reader, opts TreeOptions) error {
	dst, err := cleanAbs(dst, "destination")
	if err != nil {
		return err
	}
	c, done, err := in.sftpSession(ctx, forWrite)
	if err != nil {
		return fmt.Errorf("instance %s: push tree to %s: %w", in.name, dst, err)
	}
	defer done()
	if err := c.MkdirAll(dst); err != nil {
		return fileErr(ctx, in.name, "create", dst, err)
	}
	type dirMeta struct {
		p     string
		mode  fs.FileMode
		mtime time.Time
	}
	var dirs []dirMeta
	special := map[fs.FileMode][]string{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("instance %s: push tree to %s: read tar: %w", in.name, dst, ctxErr(ctx, err))
		}
		rel, err := entryPath(h.Name)
		if err != nil {
			return err
		}
		target := path.Join(dst, rel)
		uid, gid := h.Uid, h.Gid
		if opts.Owner != nil {
			uid, gid = opts.Owner.UID, opts.Owner.GID
		}
		mode := tarMode(h)
		switch h.Typeflag {
		case tar.TypeDir:
			// Written owner-only first, its own mode once its content is in.
			if err := mkdir(c, target, executor.FileOptions{UID: uid, GID: gid, Mode: 0o700, MkdirAll: true}); err != nil {
				return fileErr(ctx, in.name, "mkdir", target, err)
			}
			dirs = append(dirs, dirMeta{target, mode, h.ModTime})
			if mode&specialBits != 0 {
				special[mode] = append(special[mode], target)
			}
		case tar.TypeReg:
			if err := c.MkdirAll(path.Dir(target)); err != nil {
				return fileErr(ctx, in.name, "create parents of", target, err)
			}
			if err := writeFile(c, target, tr, uid, gid, mode); err != nil {
				return fileErr(ctx, in.name, "push", target, err)
			}
			if mode&specialBits != 0 {
				special[mode] = append(special[mode], target)
			}
			if err := c.Chtimes(target, h.ModTime, h.ModTime); err != nil {
				return fileErr(ctx, in.name, "set time of", target, err)
			}
		case tar.TypeSymlink:
			_ = c.Remove(target)
			if err := c.Symlink(h.Linkname, target); err != nil {
				return fileErr(ctx, in.name, "symlink", target, err)
			}
		case tar.TypeLink:
			old, err := entryPath(h.Linkname)
			if err != nil {
				return err
			}
			_ = c.Remove(target)
			if err := c.Link(path.Join(dst, old), target); err != nil {
				return fileErr(ctx, in.name, "link", target, err)
			}
		default:
			in.m.log.Warn("push tree: entry type not supported; skipped", "name", in.name, "entry", h.Name, "type", string(h.Typeflag))
		}
	}
	for _, d := range slices.Backward(dirs) {
		if err := c.Chmod(d.p, d.mode); err != nil {
			return fileErr(ctx, in.name, "chmod", d.p, err)
		}
		if err := c.Chtimes(d.p, d.mtime, d.mtime); err != nil {
			return fileErr(ctx, in.name, "set time of", d.p, err)
		}
	}
	return in.chmodSpecial(ctx, special)
}

func tarMode(h *tar.Header) fs.FileMode {
	m := fs.FileMode(h.Mode) & fs.ModePerm
	if h.Mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if h.Mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if h.Mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}

// PullTar writes the tree at src (absolute; a directory or a single file)
// in the instance to w as a tar stream, with modes, owners and modification
// times. Entry names are relative to src; the directory itself is "./".
func (in *Instance) PullTar(ctx context.Context, src string, w io.Writer) error {
	src, err := cleanAbs(src, "source")
	if err != nil {
		return err
	}
	c, done, err := in.sftpSession(ctx, forRead)
	if err != nil {
		return fmt.Errorf("instance %s: pull tree %s: %w", in.name, src, err)
	}
	defer done()
	tw := tar.NewWriter(w)
	walker := c.Walk(src)
	for walker.Step() {
		if err := walker.Err(); err != nil {
			return fileErr(ctx, in.name, "pull tree", walker.Path(), err)
		}
		p, st := walker.Path(), walker.Stat()
		rel, _ := filepath.Rel(src, p)
		if rel == "." && !st.IsDir() {
			rel = path.Base(src)
		}
		h := &tar.Header{Name: rel, ModTime: st.ModTime(), Mode: int64(unixMode(st.Mode()))}
		if s, ok := st.Sys().(*sftp.FileStat); ok {
			h.Uid, h.Gid = int(s.UID), int(s.GID)
		}
		switch {
		case st.IsDir():
			h.Typeflag, h.Name = tar.TypeDir, strings.TrimSuffix(rel, "/")+"/"
			if rel == "." {
				h.Name = "./"
			}
		case st.Mode()&fs.ModeSymlink != 0:
			target, err := c.ReadLink(p)
			if err != nil {
				return fileErr(ctx, in.name, "read link", p, err)
			}
			h.Typeflag, h.Linkname = tar.TypeSymlink, target
		case st.Mode().IsRegular():
			h.Typeflag, h.Size = tar.TypeReg, st.Size()
		default:
			in.m.log.Warn("pull tree: entry type not supported; skipped", "name", in.name, "path", p, "mode", st.Mode().String())
			continue
		}
		if err := tw.WriteHeader(h); err != nil {
			return ctxErr(ctx, err)
		}
		if h.Typeflag == tar.TypeReg {
			f, err := c.Open(p)
			if err != nil {
				return fileErr(ctx, in.name, "pull", p, err)
			}
			// A file that grows while it is read is cut at its size.
			_, err = f.WriteTo(&limitWriter{w: tw, n: h.Size})
			f.Close()
			if err != nil && !errors.Is(err, errLimit) {
				return fileErr(ctx, in.name, "pull", p, err)
			}
		}
	}
	return ctxErr(ctx, tw.Close())
}

var errLimit = errors.New("file larger than its size")

type limitWriter struct {
	w io.Writer
	n int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.n {
		n, err := l.w.Write(p[:l.n])
		l.n -= int64(n)
		if err == nil {
			err = errLimit
		}
		return n, err
	}
	n, err := l.w.Write(p)
	l.n -= int64(n)
	return n, err
}

// PushTree copies the host directory src into the directory dst (absolute)
// of the instance, as PushTar does with a tar of src.
func (in *Instance) PushTree(ctx context.Context, src, dst string, opts TreeOptions) error {
	if _, err := cleanAbs(dst, "destination"); err != nil {
		return err
	}
	if st, err := os.Stat(src); err != nil {
		return fmt.Errorf("instance %s: push directory: %w", in.name, err)
	} else if !st.IsDir() {
		return fmt.Errorf("%w: instance %s: push directory: %s is not a directory", ErrInvalid, in.name, src)
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeHostTar(pw, src)) }()
	err := in.PushTar(ctx, dst, pr, opts)
	pr.CloseWithError(errors.New("push ended"))
	return err
}

// writeHostTar writes the tree at dir to w, names relative to dir.
func writeHostTar(w io.Writer, dir string) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		st, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if st.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		h, err := tar.FileInfoHeader(st, link)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		h.Name = filepath.ToSlash(rel)
		if d.IsDir() {
			h.Name += "/"
		}
		h.Uname, h.Gname = "", ""
		if !st.Mode().IsRegular() && !d.IsDir() && st.Mode()&fs.ModeSymlink == 0 {
			return nil
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if !st.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, io.LimitReader(f, h.Size))
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// PullTree copies the tree at src (absolute) of the instance into the host
// directory dst, creating it. Everything is written beneath dst: links in
// the stream cannot make it write elsewhere. Modes and times are kept;
// owners as TreeOptions says.
func (in *Instance) PullTree(ctx context.Context, src, dst string, opts TreeOptions) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return fmt.Errorf("instance %s: pull directory: %w", in.name, err)
	}
	root, err := os.OpenRoot(dst)
	if err != nil {
		return fmt.Errorf("instance %s: pull directory: %w", in.name, err)
	}
	defer root.Close()
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		err := in.PullTar(ctx, src, pw)
		pw.CloseWithError(err)
		errc <- err
	}()
	xerr := extractTar(root, pr, opts.Owner)
	pr.CloseWithError(errors.New("extraction ended"))
	if perr := <-errc; perr != nil {
		return perr
	}
	if xerr != nil {
		return fmt.Errorf("instance %s: pull directory %s to %s: %w", in.name, src, dst, xerr)
	}
	return nil
}

// extractTar writes a tar stream under root.
func extractTar(root *os.Root, r io.Reader, owner *Owner) error {
	type dirMeta struct {
		p     string
		mode  fs.FileMode
		mtime time.Time
	}
	var dirs []dirMeta
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		rel, err := entryPath(h.Name)
		if err != nil {
			return err
		}
		mode := tarMode(h)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(rel, 0o700); err != nil {
				return err
			}
			dirs = append(dirs, dirMeta{rel, mode, h.ModTime})
		case tar.TypeReg:
			if err := root.MkdirAll(path.Dir(rel), 0o755); err != nil {
				return err
			}
			_ = root.Remove(rel)
			f, err := root.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if err == nil {
				err = f.Chmod(mode)
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err == nil {
				err = root.Chtimes(rel, h.ModTime, h.ModTime)
			}
			if err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := root.MkdirAll(path.Dir(rel), 0o755); err != nil {
				return err
			}
			_ = root.Remove(rel)
			if err := root.Symlink(h.Linkname, rel); err != nil {
				return err
			}
		default:
			continue
		}
		if owner != nil {
			if err := root.Lchown(rel, owner.UID, owner.GID); err != nil {
				return err
			}
		}
	}
	for _, d := range slices.Backward(dirs) {
		if err := root.Chmod(d.p, d.mode); err != nil {
			return err
		}
		if err := root.Chtimes(d.p, d.mtime, d.mtime); err != nil {
			return err
		}
	}
	return nil
}
