package fake

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/incusexec/incusexec/executor"
)

type state int

const (
	stateStopped state = iota
	stateRunning
	stateGone
)

func (s state) String() string {
	return [...]string{"stopped", "running", "gone"}[s]
}

// Instance is an instance of the fake executor: a state machine (stopped,
// running, gone) that behaves like an Incus container, with an in-memory
// file tree and mounts backed by host directories.
type Instance struct {
	ex   *Executor
	name string
	spec executor.Spec

	// Guarded by ex.mu.
	state  state
	files  map[string]*File
	users  map[string]executor.User
	mounts map[string]*mountRef
	execs  map[*int]context.CancelFunc
}

var _ executor.Instance = (*Instance)(nil)

// Name returns the instance's name.
func (in *Instance) Name() string { return in.name }

// Spec returns the spec the instance was created with (the generated name
// filled in).
func (in *Instance) Spec() executor.Spec { return in.spec }

// State returns "stopped", "running" or "gone".
func (in *Instance) State() string {
	in.ex.mu.Lock()
	defer in.ex.mu.Unlock()
	return in.state.String()
}

// File returns the file at path p of the in-memory tree (not of mounts).
func (in *Instance) File(p string) (File, bool) {
	in.ex.mu.Lock()
	defer in.ex.mu.Unlock()
	f, ok := in.files[p]
	if !ok {
		return File{}, false
	}
	c := *f
	c.Data = append([]byte(nil), f.Data...)
	return c, true
}

// Mounts returns the reference count of each mounted alias.
func (in *Instance) Mounts() map[string]int {
	in.ex.mu.Lock()
	defer in.ex.mu.Unlock()
	out := map[string]int{}
	for alias, m := range in.mounts {
		out[alias] = m.count
	}
	return out
}

// Running returns the number of commands running in the instance.
func (in *Instance) Running() int {
	in.ex.mu.Lock()
	defer in.ex.mu.Unlock()
	return len(in.execs)
}

// lookup returns an error unless the instance exists (and runs, if
// running). Callers hold the lock.
func (in *Instance) check(running bool) error {
	switch {
	case in.state == stateGone:
		return fmt.Errorf("instance %s: %w", in.name, executor.ErrNotFound)
	case running && in.state != stateRunning:
		return fmt.Errorf("instance %s: %w", in.name, executor.ErrNotRunning)
	}
	return nil
}

// killAll ends the commands running in the instance. Callers hold the lock.
func (in *Instance) killAll() {
	for _, cancel := range in.execs {
		cancel()
	}
}

// Start starts the instance.
func (in *Instance) Start(ctx context.Context) (err error) {
	defer in.ex.record(OpStart, in.name, nil, &err)
	if err := in.ex.enter(ctx, OpStart); err != nil {
		return err
	}
	in.ex.mu.Lock()
	defer in.ex.mu.Unlock()
	if err := in.check(false); err != nil {
		return err
	}
	in.state = stateRunning
	return nil
}

// Stop stops the instance, killing its commands; an ephemeral instance is
// gone afterwards.
func (in *Instance) Stop(ctx context.Context) (err error) {
	defer in.ex.record(OpStop, in.name, nil, &err)
	if err := in.ex.enter(ctx, OpStop); err != nil {
		return err
	}
	in.ex.mu.Lock()
	defer in.ex.mu.Unlock()
	if in.state == stateGone {
		return nil
	}
	in.killAll()
	in.state = stateStopped
	if in.spec.Ephemeral {
		in.state = stateGone
	}
	return nil
}

// Restart stops the instance if it runs and starts it.
func (in *Instance) Restart(ctx context.Context) (err error) {
	defer in.ex.record(OpRestart, in.name, nil, &err)
	if err := in.ex.enter(ctx, OpRestart); err != nil {
		return err
	}
	in.ex.mu.Lock()
	defer in.ex.mu.Unlock()
	if err := in.check(false); err != nil {
		return err
	}
	in.killAll()
	in.state = stateRunning
	return nil
}

// Delete deletes the instance.
func (in *Instance) Delete(ctx context.Context) (err error) {
	defer in.ex.record(OpDelete, in.name, nil, &err)
	if err := in.ex.enter(ctx, OpDelete); err != nil {
		return err
	}
	in.ex.mu.Lock()
	defer in.ex.mu.Unlock()
	in.killAll()
	in.state = stateGone
	return nil
}

// IsStarted reports whether the instance runs.
func (in *Instance) IsStarted(ctx context.Context) (_ bool, err error) {
	defer in.ex.record(OpIsStarted, in.name, nil, &err)
	if err := in.ex.enter(ctx, OpIsStarted); err != nil {
		return false, err
	}
	in.ex.mu.Lock()
	defer in.ex.mu.Unlock()
	if err := in.check(false); err != nil {
		return false, err
	}
	return in.state == stateRunning, nil
}

// Stats returns Executor.Stats for a running instance, zero usage for a
// stopped one.
func (in *Instance) Stats(ctx context.Context) (_ executor.Stats, err error) {
	defer in.ex.record(OpStats, in.name, nil, &err)
	if err := in.ex.enter(ctx, OpStats); err != nil {
		return executor.Stats{}, err
	}
	in.ex.mu.Lock()
	defer in.ex.mu.Unlock()
	if err := in.check(false); err != nil {
		return executor.Stats{}, err
	}
	if in.state != stateRunning {
		return executor.Stats{}, nil
	}
	return in.ex.stats(), nil
}

// Push writes r to dst.
func (in *Instance) Push(ctx context.Context, dst string, r io.Reader, opts executor.FileOptions) (err error) {
	defer in.ex.record(OpPush, in.name, []string{dst}, &err)
	if err := in.ex.enter(ctx, OpPush); err != nil {
		return err
	}
	p, err := executor.CleanPath(dst)
	if err != nil {
		return err
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("push %s to %s: %w", p, in.name, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	in.ex.mu.Lock()
	defer in.ex.mu.Unlock()
	if err := in.check(false); err != nil {
		return err
	}
	if err := in.writeFile(p, data, opts); err != nil {
		return fmt.Errorf("push to %s: %w", in.name, err)
	}
	return nil
}

// Pull copies the regular file src into w.
func (in *Instance) Pull(ctx context.Context, src string, w io.Writer) (_ executor.FileInfo, err error) {
	defer in.ex.record(OpPull, in.name, []string{src}, &err)
	if err := in.ex.enter(ctx, OpPull); err != nil {
		return executor.FileInfo{}, err
	}
	p, err := executor.CleanPath(src)
	if err != nil {
		return executor.FileInfo{}, err
	}
	in.ex.mu.Lock()
	if err := in.check(false); err != nil {
		in.ex.mu.Unlock()
		return executor.FileInfo{}, err
	}
	data, info, err := in.readFile(p)
	in.ex.mu.Unlock()
	if err != nil {
		return executor.FileInfo{}, fmt.Errorf("pull from %s: %w", in.name, err)
	}
	if _, err := w.Write(data); err != nil {
		return executor.FileInfo{}, fmt.Errorf("pull %s from %s: %w", p, in.name, err)
	}
	return info, nil
}

// Stat returns the metadata of p.
func (in *Instance) Stat(ctx context.Context, p string) (_ executor.FileInfo, err error) {
	defer in.ex.record(OpStat, in.name, []string{p}, &err)
	if err := in.ex.enter(ctx, OpStat); err != nil {
		return executor.FileInfo{}, err
	}
	cp, err := executor.CleanPath(p)
	if err != nil {
		return executor.FileInfo{}, err
	}
	in.ex.mu.Lock()
	defer in.ex.mu.Unlock()
	if err := in.check(false); err != nil {
		return executor.FileInfo{}, err
	}
	info, err := in.stat(cp)
	if err != nil {
		return info, fmt.Errorf("stat in %s: %w", in.name, err)
	}
	info.Path = p
	return info, nil
}

// Mkdir creates dir and its missing parents.
func (in *Instance) Mkdir(ctx context.Context, dir string, opts executor.FileOptions) (err error) {
	defer in.ex.record(OpMkdir, in.name, []string{dir}, &err)
	if err := in.ex.enter(ctx, OpMkdir); err != nil {
		return err
	}
	p, err := executor.CleanPath(dir)
	if err != nil {
		return err
	}
	in.ex.mu.Lock()
	defer in.ex.mu.Unlock()
	if err := in.check(false); err != nil {
		return err
	}
	if err := in.mkdirAll(p, opts); err != nil {
		return fmt.Errorf("mkdir in %s: %w", in.name, err)
	}
	return nil
}

// PushTree copies the host directory hostDir's contents into dst.
func (in *Instance) PushTree(ctx context.Context, hostDir, dst string, opts executor.FileOptions) (err error) {
	defer in.ex.record(OpPushTree, in.name, []string{hostDir, dst}, &err)
	if err := in.ex.enter(ctx, OpPushTree); err != nil {
		return err
	}
	root, err := executor.CleanPath(dst)
	if err != nil {
		return err
	}
	top, err := os.Stat(hostDir)
	if err != nil {
		return fmt.Errorf("push tree: %w", err)
	}
	if !top.IsDir() {
		return fmt.Errorf("push tree: %s: %w: not a directory", hostDir, executor.ErrInvalid)
	}
	type entry struct {
		p    string
		mode fs.FileMode
		data []byte
	}
	var entries []entry
	err = filepath.WalkDir(hostDir, func(hp string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(hostDir, hp)
		p := path.Join(root, filepath.ToSlash(rel))
		fi, err := os.Lstat(hp)
		if err != nil {
			return err
		}
		e := entry{p: p, mode: fi.Mode()}
		switch {
		case fi.Mode().IsRegular():
			if e.data, err = os.ReadFile(hp); err != nil {
				return err
			}
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(hp)
			if err != nil {
				return err
			}
			e.data = []byte(target)
		case fi.IsDir():
		default:
			return nil // devices, sockets and pipes are not copied
		}
		entries = append(entries, e)
		return nil
	})
	if err != nil {
		return fmt.Errorf("push tree %s to %s: %w", hostDir, in.name, err)
	}
	in.ex.mu.Lock()
	defer in.ex.mu.Unlock()
	if err := in.check(false); err != nil {
		return err
	}
	for _, e := range entries {
		o := opts
		o.Mode = e.mode & (fs.ModePerm | fs.ModeSticky | fs.ModeSetgid | fs.ModeSetuid)
		o.MkdirAll = true
		switch {
		case e.mode.IsDir():
			if _, err = in.stat(e.p); err == nil {
				continue // an existing directory is left as it is
			}
			err = in.mkdirAll(e.p, o)
		case e.mode&fs.ModeSymlink != 0:
			if hp, m := in.hostPath(e.p); m != nil {
				err = os.Symlink(string(e.data), hp)
			} else {
				in.files[e.p] = &File{Mode: fs.ModeSymlink | 0o777, UID: opts.UID, GID: opts.GID, Data: e.data}
			}
		default:
			err = in.writeFile(e.p, e.data, o)
		}
		if err != nil {
			return fmt.Errorf("push tree to %s: %w", in.name, err)
		}
	}
	return nil
}

// PullTree copies the directory src's contents into hostDir.
func (in *Instance) PullTree(ctx context.Context, src, hostDir string) (err error) {
	defer in.ex.record(OpPullTree, in.name, []string{src, hostDir}, &err)
	if err := in.ex.enter(ctx, OpPullTree); err != nil {
		return err
	}
	root, err := executor.CleanPath(src)
	if err != nil {
		return err
	}
	type entry struct {
		rel  string
		info executor.FileInfo
		data []byte
	}
	var entries []entry
	in.ex.mu.Lock()
	err = in.check(false)
	var walk func(p, rel string) error
	walk = func(p, rel string) error {
		info, err := in.stat(p)
		if err != nil {
			return err
		}
		e := entry{rel: rel, info: info}
		switch {
		case info.IsDir():
			entries = append(entries, e)
			names, err := in.children(p)
			if err != nil {
				return err
			}
			for _, n := range names {
				if err := walk(path.Join(p, n), path.Join(rel, n)); err != nil {
					return err
				}
			}
			return nil
		case info.Mode&fs.ModeSymlink != 0:
			if hp, m := in.hostPath(p); m != nil {
				t, err := os.Readlink(hp)
				if err != nil {
					return hostErr(p, err)
				}
				e.data = []byte(t)
			} else {
				e.data = in.files[p].Data
			}
		case info.Mode.IsRegular():
			if e.data, _, err = in.readFile(p); err != nil {
				return err
			}
		default:
			return nil
		}
		entries = append(entries, e)
		return nil
	}
	if err == nil {
		var info executor.FileInfo
		if info, err = in.stat(root); err == nil && !info.IsDir() {
			err = fmt.Errorf("%s: %w: not a directory", root, executor.ErrInvalid)
		}
		if err == nil {
			err = walk(root, ".")
		}
	}
	in.ex.mu.Unlock()
	if err != nil {
		return fmt.Errorf("pull tree from %s: %w", in.name, err)
	}
	for _, e := range entries {
		hp := filepath.Join(hostDir, filepath.FromSlash(e.rel))
		mode := e.info.Mode & (fs.ModePerm | fs.ModeSticky | fs.ModeSetgid | fs.ModeSetuid)
		switch {
		case e.info.IsDir():
			if err := os.MkdirAll(hp, 0o700); err != nil {
				return fmt.Errorf("pull tree from %s: %w", in.name, err)
			}
		case e.info.Mode&fs.ModeSymlink != 0:
			_ = os.Remove(hp)
			if err := os.Symlink(string(e.data), hp); err != nil {
				return fmt.Errorf("pull tree from %s: %w", in.name, err)
			}
			continue
		default:
			if err := os.WriteFile(hp, e.data, 0o600); err != nil {
				return fmt.Errorf("pull tree from %s: %w", in.name, err)
			}
		}
		if err := os.Chmod(hp, mode); err != nil {
			return fmt.Errorf("pull tree from %s: %w", in.name, err)
		}
	}
	// Directories get their modes last, so that read-only ones could be
	// filled first.
	for i := len(entries) - 1; i >= 0; i-- {
		if e := entries[i]; e.info.IsDir() {
			_ = os.Chmod(filepath.Join(hostDir, filepath.FromSlash(e.rel)), e.info.Mode&(fs.ModePerm|fs.ModeSticky|fs.ModeSetgid|fs.ModeSetuid))
		}
	}
	return nil
}

var userName = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

// EnsureUser creates the user name and its group, with home /home/<name>.
func (in *Instance) EnsureUser(ctx context.Context, name string) (_ executor.User, err error) {
	defer in.ex.record(OpEnsureUser, in.name, []string{name}, &err)
	if err := in.ex.enter(ctx, OpEnsureUser); err != nil {
		return executor.User{}, err
	}
	if !userName.MatchString(name) {
		return executor.User{}, fmt.Errorf("user name %q: %w", name, executor.ErrInvalid)
	}
	in.ex.mu.Lock()
	defer in.ex.mu.Unlock()
	if err := in.check(true); err != nil {
		return executor.User{}, err
	}
	if u, ok := in.users[name]; ok {
		return u, nil
	}
	uid := 1000
	for taken := true; taken; {
		taken = false
		for _, u := range in.users {
			if u.UID == uid {
				taken = true
				uid++
			}
		}
	}
	u := executor.User{Name: name, UID: uid, GID: uid, Home: "/home/" + name}
	if err := in.mkdirAll(u.Home, executor.FileOptions{UID: uid, GID: uid, Mode: 0o755}); err != nil {
		return executor.User{}, err
	}
	in.users[name] = u
	in.appendLine("/etc/passwd", fmt.Sprintf("%s:x:%d:%d::%s:/bin/sh", name, uid, uid, u.Home))
	in.appendLine("/etc/group", fmt.Sprintf("%s:x:%d:", name, uid))
	return u, nil
}

func (in *Instance) appendLine(p, line string) {
	f := in.files[p]
	if f == nil {
		f = &File{Mode: 0o644}
		in.files[p] = f
	}
	f.Data = append(f.Data, line+"\n"...)
}

// resolve returns the uid, gid, name and home for cmd's user and group.
// Callers hold the lock.
func (in *Instance) resolve(user, group string) (uid, gid int, name, home string, err error) {
	byUID := func(id int) (executor.User, bool) {
		for _, u := range in.users {
			if u.UID == id {
				return u, true
			}
		}
		return executor.User{}, false
	}
	switch n, convErr := strconv.Atoi(user); {
	case user == "":
		uid, gid, name, home = 0, 0, "root", "/root"
	case convErr == nil && n >= 0:
		uid, gid, name, home = n, n, user, "/"
		if u, ok := byUID(n); ok {
			gid, name, home = u.GID, u.Name, u.Home
		}
	default:
		u, ok := in.users[user]
		if !ok {
			return 0, 0, "", "", fmt.Errorf("user %q in %s: %w", user, in.name, executor.ErrNotFound)
		}
		uid, gid, name, home = u.UID, u.GID, u.Name, u.Home
	}
	switch n, convErr := strconv.Atoi(group); {
	case group == "":
	case convErr == nil && n >= 0:
		gid = n
	default:
		u, ok := in.users[group]
		if !ok {
			return 0, 0, "", "", fmt.Errorf("group %q in %s: %w", group, in.name, executor.ErrNotFound)
		}
		gid = u.GID
	}
	return uid, gid, name, home, nil
}

// gate forwards writes until it is closed, so that a command still running
// after Exec returned cannot touch the caller's writers.
type gate struct {
	mu     sync.Mutex
	w      io.Writer
	closed bool
}

func (g *gate) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return 0, io.ErrClosedPipe
	}
	return g.w.Write(p)
}

func (g *gate) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

// gateReader is gate for stdin.
type gateReader struct {
	mu     sync.Mutex
	r      io.Reader
	closed bool
}

func (g *gateReader) Read(p []byte) (int, error) {
	g.mu.Lock()
	closed := g.closed
	g.mu.Unlock()
	if closed {
		return 0, io.EOF
	}
	return g.r.Read(p)
}

func (g *gateReader) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

var errTimeout = errors.New("command timeout")

// sameWriter reports whether a and b are the same non-nil writer (a type
// that cannot be compared is never the same).
func sameWriter(a, b io.Writer) bool {
	if a == nil || b == nil {
		return false
	}
	ta, tb := reflect.TypeOf(a), reflect.TypeOf(b)
	return ta == tb && ta.Comparable() && a == b
}

// Exec runs cmd through the handler for its name (Executor.Commands, then
// the built-in commands); an unknown command exits with 127.
func (in *Instance) Exec(ctx context.Context, cmd executor.Cmd) (code int, err error) {
	defer in.ex.record(OpExec, in.name, append([]string(nil), cmd.Args...), &err)
	if err := in.ex.enter(ctx, OpExec); err != nil {
		return -1, err
	}
	if len(cmd.Args) == 0 {
		return -1, fmt.Errorf("exec in %s: %w: empty command", in.name, executor.ErrInvalid)
	}
	in.ex.mu.Lock()
	if err := in.check(true); err != nil {
		in.ex.mu.Unlock()
		return -1, fmt.Errorf("exec %s: %w", cmd.Args[0], err)
	}
	uid, gid, user, home, err := in.resolve(cmd.User, cmd.Group)
	if err != nil {
		in.ex.mu.Unlock()
		return -1, fmt.Errorf("exec %s: %w", cmd.Args[0], err)
	}
	dir := cmd.Dir
	if dir == "" {
		dir = home
	}
	if info, err := in.stat(path.Clean(dir)); err != nil || !info.IsDir() {
		in.ex.mu.Unlock()
		return -1, fmt.Errorf("exec %s in %s: working directory %s: %w", cmd.Args[0], in.name, dir, executor.ErrNotFound)
	}
	run, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	killedByStop := errors.New("instance stopped")
	key := new(int)
	in.execs[key] = func() { cancel(killedByStop) }
	in.ex.mu.Unlock()
	defer func() {
		in.ex.mu.Lock()
		delete(in.execs, key)
		in.ex.mu.Unlock()
	}()
	if cmd.Timeout > 0 {
		var stop context.CancelFunc
		run, stop = context.WithTimeoutCause(run, cmd.Timeout, errTimeout)
		defer stop()
	}

	stdin := &gateReader{r: cmd.Stdin}
	if cmd.Stdin == nil {
		stdin.r = bytes.NewReader(nil)
	}
	stdout, stderr := &gate{w: cmd.Stdout}, &gate{w: cmd.Stderr}
	if cmd.Stdout == nil {
		stdout.w = io.Discard
	}
	if cmd.Stderr == nil {
		stderr.w = io.Discard
	}
	if sameWriter(cmd.Stdout, cmd.Stderr) {
		stderr = stdout // one gate, so one write at a time
	}
	defer func() { stdin.close(); stdout.close(); stderr.close() }()
	env := map[string]string{
		"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME": home, "USER": user, "LANG": "C.UTF-8",
	}
	for k, v := range cmd.Env {
		env[k] = v
	}
	p := &Process{
		Args: append([]string(nil), cmd.Args...), Env: env, Dir: path.Clean(dir), UID: uid, GID: gid,
		Stdin: stdin, Stdout: stdout, Stderr: stderr, Instance: in,
	}
	h := in.ex.handler(cmd.Args[0])
	done := make(chan int, 1)
	go func() { done <- h(run, p) }()
	select {
	case code = <-done:
	case <-run.Done():
	}
	if run.Err() == nil {
		return code, nil
	}
	switch cause := context.Cause(run); {
	case ctx.Err() != nil:
		return -1, fmt.Errorf("exec %s in %s: %w", cmd.Args[0], in.name, context.Cause(ctx))
	case errors.Is(cause, errTimeout):
		return -1, fmt.Errorf("exec %s in %s: %w after %s", cmd.Args[0], in.name, executor.ErrTimeout, cmd.Timeout)
	default:
		return -1, fmt.Errorf("exec %s in %s: %w: %v", cmd.Args[0], in.name, executor.ErrNotRunning, cause)
	}
}

// ReadFile returns the content of the regular file p, for handlers.
func (in *Instance) ReadFile(p string) ([]byte, error) {
	in.ex.mu.Lock()
	defer in.ex.mu.Unlock()
	b, _, err := in.readFile(path.Clean(p))
	return b, err
}

// WriteFile creates or replaces the regular file p, for handlers.
func (in *Instance) WriteFile(p string, data []byte, opts executor.FileOptions) error {
	in.ex.mu.Lock()
	defer in.ex.mu.Unlock()
	return in.writeFile(path.Clean(p), data, opts)
}

// Paths returns the paths of the in-memory tree (not of mounts), sorted.
func (in *Instance) Paths() []string {
	in.ex.mu.Lock()
	defer in.ex.mu.Unlock()
	out := make([]string, 0, len(in.files))
	for p := range in.files {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// String describes the instance for test failure messages.
func (in *Instance) String() string {
	return fmt.Sprintf("fake instance %s (%s)", in.name, strings.ToLower(in.State()))
}
