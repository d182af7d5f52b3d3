package instance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/internal/incusop"
	incus "github.com/lxc/incus/v6/client"
	"github.com/pkg/sftp"
)

// Directions of an SFTP session: the server answers reads with at most
// 32 KiB, which the client's concurrent reads take for the end of the file
// when it asks for more; writes go faster in bigger packets.
const (
	forRead  = false
	forWrite = true
)

// sftpSession opens an SFTP session on the instance. It ends when ctx does,
// which makes any transfer in progress fail.
func (in *Instance) sftpSession(ctx context.Context, write bool) (*sftp.Client, func(), error) {
	opts := []sftp.ClientOption{sftp.MaxConcurrentRequestsPerFile(64)}
	if write {
		opts = append(opts, sftp.MaxPacketUnchecked(128<<10), sftp.UseConcurrentWrites(true))
	}
	var (
		conn net.Conn
		c    *sftp.Client
		err  error
	)
	// incusd serves files through a per-instance helper (forkfile) that
	// exits when idle; a session opened as it exits fails to reach its
	// socket (seen under load). Nothing was transferred: open it again.
	for attempt := 1; ; attempt++ {
		conn, err = incusop.Bind(ctx, in.m.c).GetInstanceFileSFTPConn(in.name)
		if err == nil {
			c, err = sftp.NewClientPipe(conn, conn, opts...)
			if err != nil {
				_ = conn.Close()
			}
		}
		if err == nil || attempt == 5 || ctx.Err() != nil || !isForkfileGone(err) {
			break
		}
		in.m.log.Debug("file helper gone; opening the SFTP session again", "name", in.name, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(attempt) * 50 * time.Millisecond):
		}
	}
	if err != nil && conn == nil {
		return nil, nil, fmt.Errorf("%w: %w", errNoSFTP, wrapErr(err, in.name, "open SFTP session"))
	}
	if err != nil {
		return nil, nil, wrapErr(err, in.name, "start SFTP")
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	return c, func() {
		stop()
		_ = c.Close()
		_ = conn.Close()
	}, nil
}

// errNoSFTP marks a failure to open an SFTP session; single-file
// operations then fall back to the plain file endpoint (older servers have
// no SFTP), which also reports a missing instance properly.
var errNoSFTP = errors.New("no SFTP session")

// ctxErr prefers ctx's error to the broken-connection error an ended
// session produces.
func ctxErr(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", context.Cause(ctx), err)
	}
	return err
}

// Push writes r to the file dst (absolute) in the instance, replacing it.
// When the push fails part-way (r fails, the disk is full) the partial file
// is removed: the old content is lost either way.
func (in *Instance) Push(ctx context.Context, dst string, r io.Reader, opts executor.FileOptions) error {
	dst, err := cleanAbs(dst, "destination")
	if err != nil {
		return err
	}
	mode := modeOr(opts.Mode, 0o644)
	c, done, err := in.sftpSession(ctx, forWrite)
	if errors.Is(err, errNoSFTP) {
		return in.pushPlain(ctx, dst, r, opts, mode)
	}
	if err != nil {
		return err
	}
	defer done()
	if opts.MkdirAll {
		if err := c.MkdirAll(path.Dir(dst)); err != nil {
			return fileErr(ctx, in.name, "create parents of", dst, err)
		}
	}
	if err := writeFile(c, dst, r, opts.UID, opts.GID, mode); err != nil {
		return fileErr(ctx, in.name, "push", dst, err)
	}
	return in.chmodSpecial(ctx, map[fs.FileMode][]string{mode: {dst}})
}

const specialBits = fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky

// chmodSpecial gives paths modes with setuid, setgid or sticky bits, which
// Incus's SFTP server drops: by running chmod in the (running) instance.
func (in *Instance) chmodSpecial(ctx context.Context, byMode map[fs.FileMode][]string) error {
	for mode, paths := range byMode {
		if mode&specialBits == 0 || len(paths) == 0 {
			continue
		}
		for len(paths) > 0 {
			n := min(len(paths), 500)
			var stderr strings.Builder
			args := append([]string{"chmod", "--", strconv.FormatUint(uint64(unixMode(mode)), 8)}, paths[:n]...)
			code, err := in.runRoot(ctx, &stderr, args...)
			if err == nil && code != 0 {
				err = fmt.Errorf("chmod exited with %d: %s", code, strings.TrimSpace(stderr.String()))
			}
			if err != nil {
				return fmt.Errorf("instance %s: set mode %s on %s: %w", in.name, mode, paths[0], err)
			}
			paths = paths[n:]
		}
	}
	return nil
}

func writeFile(c *sftp.Client, dst string, r io.Reader, uid, gid int, mode fs.FileMode) error {
	// A link at dst is replaced, not written through.
	if st, err := c.Lstat(dst); err == nil && st.Mode()&fs.ModeSymlink != 0 {
		if err := c.Remove(dst); err != nil {
			return err
		}
	}
	f, err := c.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		return err
	}
	// Owner and mode first: the content is never readable by others in
	// between, and chown does not clear setuid bits written later.
	if err := f.Chown(uid, gid); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.ReadFromWithConcurrency(r, 0); err != nil {
		f.Close()
		// The old content is gone already (truncated); a partial file
		// would only hold the space a full disk needs back.
		_ = c.Remove(dst)
		return err
	}
	if err := f.Close(); err != nil {
		_ = c.Remove(dst)
		return err
	}
	return nil
}

func (in *Instance) pushPlain(ctx context.Context, dst string, r io.Reader, opts executor.FileOptions, mode fs.FileMode) error {
	if opts.MkdirAll {
		if err := in.mkdirPlain(ctx, path.Dir(dst), executor.FileOptions{MkdirAll: true}); err != nil {
			return err
		}
	}
	// The plain endpoint wants a ReadSeeker: spool what is not one.
	rs, ok := r.(io.ReadSeeker)
	if !ok {
		tmp, err := os.CreateTemp("", "incusexec-push-")
		if err != nil {
			return err
		}
		defer os.Remove(tmp.Name())
		defer tmp.Close()
		if _, err := io.Copy(tmp, r); err != nil {
			return err
		}
		if _, err := tmp.Seek(0, io.SeekStart); err != nil {
			return err
		}
		rs = tmp
	}
	err := incusop.Bind(ctx, in.m.c).CreateInstanceFile(in.name, dst, incus.InstanceFileArgs{
		Content: rs, UID: int64(opts.UID), GID: int64(opts.GID), Mode: int(unixMode(mode)), Type: "file", WriteMode: "overwrite",
	})
	return wrapErr(err, in.name, "push "+dst)
}

// Pull copies the file src (absolute) of the instance to w.
func (in *Instance) Pull(ctx context.Context, src string, w io.Writer) (executor.FileInfo, error) {
	src, err := cleanAbs(src, "source")
	if err != nil {
		return executor.FileInfo{}, err
	}
	c, done, err := in.sftpSession(ctx, forRead)
	if errors.Is(err, errNoSFTP) {
		return in.pullPlain(ctx, src, w)
	}
	if err != nil {
		return executor.FileInfo{}, err
	}
	defer done()
	f, err := c.Open(src)
	if err != nil {
		return executor.FileInfo{}, fileErr(ctx, in.name, "pull", src, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return executor.FileInfo{}, fileErr(ctx, in.name, "pull", src, err)
	}
	if !st.Mode().IsRegular() {
		return executor.FileInfo{}, fmt.Errorf("%w: instance %s: pull %s: not a regular file (%s); use PullTar for trees", ErrInvalid, in.name, src, st.Mode().Type())
	}
	info := infoOf(src, st)
	if _, err := f.WriteTo(w); err != nil {
		return info, fileErr(ctx, in.name, "pull", src, err)
	}
	return info, nil
}

func (in *Instance) pullPlain(ctx context.Context, src string, w io.Writer) (executor.FileInfo, error) {
	rc, resp, err := incusop.Bind(ctx, in.m.c).GetInstanceFile(in.name, src)
	if err != nil {
		return executor.FileInfo{}, wrapErr(err, in.name, "pull "+src)
	}
	if rc == nil || resp == nil || resp.Type != "file" {
		if rc != nil {
			rc.Close()
		}
		return executor.FileInfo{}, fmt.Errorf("%w: instance %s: pull %s: not a regular file", ErrInvalid, in.name, src)
	}
	defer rc.Close()
	info := executor.FileInfo{Path: src, Mode: fs.FileMode(resp.Mode) & fs.ModePerm, UID: int(resp.UID), GID: int(resp.GID)}
	n, err := io.Copy(w, rc)
	info.Size = n
	return info, wrapErr(err, in.name, "pull "+src)
}

// Mkdir makes the directory p (absolute) in the instance. An existing
// directory is not an error; it gets opts' owner and mode.
func (in *Instance) Mkdir(ctx context.Context, p string, opts executor.FileOptions) error {
	p, err := cleanAbs(p, "directory")
	if err != nil {
		return err
	}
	c, done, err := in.sftpSession(ctx, forWrite)
	if errors.Is(err, errNoSFTP) {
		return in.mkdirPlain(ctx, p, opts)
	}
	if err != nil {
		return err
	}
	defer done()
	if err := mkdir(c, p, opts); err != nil {
		return fileErr(ctx, in.name, "mkdir", p, err)
	}
	return in.chmodSpecial(ctx, map[fs.FileMode][]string{modeOr(opts.Mode, 0o755): {p}})
}

func mkdir(c *sftp.Client, p string, opts executor.FileOptions) error {
	if opts.MkdirAll {
		if err := c.MkdirAll(path.Dir(p)); err != nil {
			return err
		}
	}
	if err := c.Mkdir(p); err != nil {
		st, serr := c.Lstat(p)
		if serr != nil || !st.IsDir() {
			return err
		}
	}
	if err := c.Chown(p, opts.UID, opts.GID); err != nil {
		return err
	}
	return c.Chmod(p, modeOr(opts.Mode, 0o755))
}

func (in *Instance) mkdirPlain(ctx context.Context, p string, opts executor.FileOptions) error {
	if p == "/" {
		return nil
	}
	if opts.MkdirAll {
		if err := in.mkdirPlain(ctx, path.Dir(p), executor.FileOptions{MkdirAll: true}); err != nil {
			return err
		}
	}
	c := incusop.Bind(ctx, in.m.c)
	if rc, resp, err := c.GetInstanceFile(in.name, p); err == nil && resp != nil {
		if rc != nil {
			rc.Close()
		}
		if resp.Type == "directory" && (opts.MkdirAll && opts.Mode == 0 && opts.UID == 0 && opts.GID == 0) {
			return nil
		}
	}
	err := c.CreateInstanceFile(in.name, p, incus.InstanceFileArgs{
		UID: int64(opts.UID), GID: int64(opts.GID), Mode: int(unixMode(modeOr(opts.Mode, 0o755))), Type: "directory",
	})
	return wrapErr(err, in.name, "mkdir "+p)
}

// modeOr returns m's permission and special bits, or def when it has none.
// Special bits may be given Go's way (fs.ModeSetuid) or the numeric way
// (0o4755).
func modeOr(m, def fs.FileMode) fs.FileMode {
	if m&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	m &= fs.ModePerm | specialBits
	if m == 0 {
		return def
	}
	return m
}

// unixMode turns Go's mode bits into the numeric permission bits.
func unixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		u |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		u |= 0o1000
	}
	return u
}

func infoOf(p string, st fs.FileInfo) executor.FileInfo {
	info := executor.FileInfo{Path: p, Mode: st.Mode(), Size: st.Size()}
	if s, ok := st.Sys().(*sftp.FileStat); ok {
		info.UID, info.GID = int(s.UID), int(s.GID)
	}
	return info
}

// fileErr names the file and maps "does not exist" onto ErrNotFound.
func fileErr(ctx context.Context, name, action, p string, err error) error {
	err = ctxErr(ctx, err)
	var se *sftp.StatusError
	if errors.Is(err, fs.ErrNotExist) || errors.As(err, &se) && se.FxCode() == sftp.ErrSSHFxNoSuchFile {
		return fmt.Errorf("instance %s: %s %s: %w: %w", name, action, p, ErrNotFound, err)
	}
	return fmt.Errorf("instance %s: %s %s: %w", name, action, p, err)
}

// Stat returns the metadata of p (absolute) in the instance, through an
// SFTP session. A symbolic link is described itself, not followed (lstat).
// Size is that of the entry as the server reports it. A missing path is an
// error wrapping ErrNotFound, a relative one ErrInvalid.
func (in *Instance) Stat(ctx context.Context, p string) (executor.FileInfo, error) {
	p, err := cleanAbs(p, "path")
	if err != nil {
		return executor.FileInfo{}, err
	}
	c, done, err := in.sftpSession(ctx, forRead)
	if err != nil {
		return executor.FileInfo{}, ctxErr(ctx, err)
	}
	defer done()
	st, err := c.Lstat(p)
	if err != nil {
		return executor.FileInfo{}, fileErr(ctx, in.name, "stat", p, err)
	}
	return infoOf(p, st), nil
}

// isForkfileGone tells incusd's failure to reach the instance's file helper,
// which had just exited: either incusd finds no socket, or the helper closes
// the connection before the SFTP handshake ("error receiving version packet
// from server: server unexpectedly closed connection", seen under load).
// Both happen before any byte of a file moves, so the session can be opened
// again.
func isForkfileGone(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "forkfile.sock") || strings.Contains(msg, "error receiving version packet")
}
