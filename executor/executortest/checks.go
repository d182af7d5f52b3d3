package executortest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/incusexec/incusexec/executor"
)

func checkImage(c *checker) {
	if err := c.ex.Available(c.ctx); err != nil {
		c.fatalf("Available = %v; the suite needs an available backend", err)
	}
	for i := range 2 {
		if err := c.ex.EnsureImage(c.ctx); err != nil {
			c.fatalf("EnsureImage (call %d) = %v; want nil (idempotent)", i+1, err)
		}
	}
	alias := c.ex.Image()
	if alias == "" {
		c.errorf("Image() is empty")
	}
	args := c.ex.AutopkgtestArgs()
	want := func(vm bool) []string {
		a := []string{alias, "--", "--profile"}
		if vm {
			a = append([]string{"--vm"}, a...)
		}
		return a
	}
	switch {
	case len(args) == 5 && slices.Equal(args[:4], want(true)) && args[4] != "":
	case len(args) == 4 && slices.Equal(args[:3], want(false)) && args[3] != "":
	default:
		c.errorf("AutopkgtestArgs() = %q; want [%s -- --profile P], with --vm first for a VM image", args, alias)
	}
	if !c.opts.RemoveImage {
		return
	}
	for i := range 2 {
		if err := c.ex.RemoveImage(c.ctx); err != nil {
			c.errorf("RemoveImage (call %d) = %v; want nil (idempotent)", i+1, err)
		}
	}
	if in, err := c.ex.Create(c.ctx, executor.Spec{}); err == nil {
		_ = in.Delete(c.ctx)
		c.errorf("Create after RemoveImage succeeded; want an error wrapping ErrNotFound")
	} else {
		c.wantIs("Create after RemoveImage", err, executor.ErrNotFound, "")
	}
	if err := c.ex.EnsureImage(c.ctx); err != nil {
		c.fatalf("EnsureImage after RemoveImage = %v", err)
	}
	in := c.create(executor.Spec{})
	c.wantStarted(in, false, "after Create from the restored image")
}

func checkLifecycle(c *checker) {
	in := c.create(executor.Spec{})
	if err := executor.CheckName(in.Name()); err != nil {
		c.errorf("generated name: %v", err)
	}
	c.wantStarted(in, false, "after Create")
	if list, err := c.ex.List(c.ctx); err != nil || !slices.Contains(list, in.Name()) {
		c.errorf("List() = %q, %v; want it to contain %s", list, err, in.Name())
	}
	c.wantNil("Start", in.Start(c.ctx))
	c.wantStarted(in, true, "after Start")
	c.wantNil("Start on a running instance", in.Start(c.ctx))
	c.wantStarted(in, true, "after a second Start")
	c.wantOutput(in, cmd("echo", "up"), "up\n")
	c.wantNil("Stop", in.Stop(c.ctx))
	c.wantStarted(in, false, "after Stop")
	c.wantNil("Stop on a stopped instance", in.Stop(c.ctx))
	_, err := in.Exec(c.ctx, cmd("true"))
	c.wantIs("Exec after Stop", err, executor.ErrNotRunning, in.Name())
	c.wantNil("Restart of a stopped instance", in.Restart(c.ctx))
	c.wantStarted(in, true, "after Restart")
	c.wantNil("Restart of a running instance", in.Restart(c.ctx))
	c.wantStarted(in, true, "after a second Restart")
	c.wantOutput(in, cmd("echo", "again"), "again\n")
	c.wantNil("Delete of a running instance", in.Delete(c.ctx))
	c.wantNil("Delete of a deleted instance", in.Delete(c.ctx))
	if list, err := c.ex.List(c.ctx); err != nil || slices.Contains(list, in.Name()) {
		c.errorf("List() after Delete = %q, %v; want it without %s", list, err, in.Name())
	}
}

func checkDeleted(c *checker) {
	in := c.started(executor.Spec{})
	c.wantNil("Delete", in.Delete(c.ctx))
	name := in.Name()
	c.wantNil("Stop after Delete", in.Stop(c.ctx))
	c.wantNil("Delete after Delete", in.Delete(c.ctx))
	nf := func(what string, err error) { c.wantIs(what+" after Delete", err, executor.ErrNotFound, name) }
	nf("Start", in.Start(c.ctx))
	nf("Restart", in.Restart(c.ctx))
	_, err := in.IsStarted(c.ctx)
	nf("IsStarted", err)
	_, err = in.Exec(c.ctx, cmd("true"))
	nf("Exec", err)
	nf("Push", in.Push(c.ctx, "/tmp/x", strings.NewReader("x"), executor.FileOptions{}))
	_, _, err = c.pull(in, "/etc/passwd")
	nf("Pull", err)
	_, err = in.Stat(c.ctx, "/")
	nf("Stat", err)
	nf("Mkdir", in.Mkdir(c.ctx, "/tmp/d", executor.FileOptions{}))
	dir, err := os.MkdirTemp("", "executortest-")
	if err != nil {
		c.fatalf("host temp dir: %v", err)
	}
	defer os.RemoveAll(dir)
	nf("PushTree", in.PushTree(c.ctx, dir, "/tmp/t", executor.FileOptions{}))
	nf("PullTree", in.PullTree(c.ctx, "/etc", filepath.Join(dir, "out")))
	_, err = in.EnsureUser(c.ctx, c.opts.User)
	nf("EnsureUser", err)
	_, err = in.Stats(c.ctx)
	nf("Stats", err)
	_, err = c.ex.Statistics(c.ctx, in)
	nf("Statistics", err)
	nf("Unmount", in.Unmount(c.ctx, "some-alias"))
}

func checkEphemeral(c *checker) {
	in := c.started(executor.Spec{Ephemeral: true})
	c.wantOutput(in, cmd("echo", "ephemeral"), "ephemeral\n")
	c.wantNil("Stop of an ephemeral instance", in.Stop(c.ctx))
	c.wantIs("Start of a stopped ephemeral instance", in.Start(c.ctx), executor.ErrNotFound, in.Name())
	if list, err := c.ex.List(c.ctx); err != nil || slices.Contains(list, in.Name()) {
		c.errorf("List() after stopping an ephemeral instance = %q, %v; want it without %s", list, err, in.Name())
	}
	c.wantNil("Delete of a stopped ephemeral instance", in.Delete(c.ctx))
}

func checkNames(c *checker) {
	name := "executortest-" + random(4)
	in := c.create(executor.Spec{Name: name, ID: "conformance"})
	if in.Name() != name {
		c.errorf("Create(Name: %s).Name() = %s", name, in.Name())
	}
	if dup, err := c.ex.Create(c.ctx, executor.Spec{Name: name}); err == nil {
		_ = dup.Delete(c.ctx)
		c.errorf("second Create(Name: %s) succeeded; want ErrAlreadyExists", name)
	} else {
		c.wantIs("second Create with the same name", err, executor.ErrAlreadyExists, name)
	}
	c.wantStarted(in, false, "after a clashing Create")
	for _, bad := range []string{"-leading-hyphen", "under_score", "1digit", strings.Repeat("a", 64)} {
		if in, err := c.ex.Create(c.ctx, executor.Spec{Name: bad}); err == nil {
			_ = in.Delete(c.ctx)
			c.errorf("Create(Name: %q) succeeded; want ErrInvalid", bad)
		} else {
			c.wantIs(fmt.Sprintf("Create(Name: %q)", bad), err, executor.ErrInvalid, bad)
		}
	}
	a, b := c.create(executor.Spec{}), c.create(executor.Spec{})
	if a.Name() == b.Name() || a.Name() == "" {
		c.errorf("two generated names: %q and %q; want distinct non-empty names", a.Name(), b.Name())
	}
}

func checkExecState(c *checker) {
	in := c.create(executor.Spec{})
	code, err := in.Exec(c.ctx, cmd("true"))
	c.wantIs("Exec on an instance never started", err, executor.ErrNotRunning, in.Name())
	if err == nil && code == 0 {
		c.errorf("Exec on a stopped instance ran the command")
	}
	_, err = in.Exec(c.ctx, executor.Cmd{})
	if !errors.Is(err, executor.ErrInvalid) && !errors.Is(err, executor.ErrNotRunning) {
		c.errorf("Exec of an empty command = %v; want ErrInvalid (or ErrNotRunning)", err)
	}
	c.wantNil("Start", in.Start(c.ctx))
	_, err = in.Exec(c.ctx, executor.Cmd{})
	c.wantIs("Exec of an empty command", err, executor.ErrInvalid, "")
}

func checkExitCodes(c *checker) {
	in := c.started(executor.Spec{})
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"true"}, 0},
		{[]string{"false"}, 1},
		{[]string{"sh", "-c", "exit 3"}, 3},
		{[]string{"sh", "-c", "exit 42"}, 42},
		{[]string{"sh", "-c", "exit 255"}, 255},
		{[]string{"executortest-no-such-command"}, 127},
		{[]string{"/nonexistent/executortest"}, 127},
	} {
		r := c.exec(in, cmd(tc.args...))
		if r.ExitCode != tc.want {
			c.errorf("Exec(%q) exit code = %d (stderr %q); want %d", tc.args, r.ExitCode, r.Stderr, tc.want)
		}
	}
}

func checkStreams(c *checker) {
	in := c.started(executor.Spec{})
	c.wantOutput(in, cmd("echo", "hello", "world"), "hello world\n")
	c.wantOutput(in, cmd("cat"), "") // no stdin: EOF at once, no hang

	big := randomBytes(1 << 20)
	var out bytes.Buffer
	code, err := in.Exec(c.ctx, executor.Cmd{Args: []string{"cat"}, Stdin: bytes.NewReader(big), Stdout: &out})
	if err != nil || code != 0 || !bytes.Equal(out.Bytes(), big) {
		c.errorf("cat of 1 MiB stdin = exit %d, %v, %d bytes out (equal: %v); want the same bytes back",
			code, err, out.Len(), bytes.Equal(out.Bytes(), big))
	}

	r := c.exec(in, cmd("cat", "/nonexistent-executortest"))
	if r.ExitCode == 0 || len(r.Stdout) != 0 || !bytes.Contains(r.Stderr, []byte("nonexistent-executortest")) {
		c.errorf("cat of a missing file = exit %d, stdout %q, stderr %q; want non-zero, nothing on stdout, the message on stderr",
			r.ExitCode, r.Stdout, r.Stderr)
	}

	// Stdout and Stderr may be one writer.
	var both syncBuffer
	code, err = in.Exec(c.ctx, executor.Cmd{Args: []string{"echo", "to both"}, Stdout: &both, Stderr: &both})
	code2, err2 := in.Exec(c.ctx, executor.Cmd{Args: []string{"cat", "/nonexistent-executortest"}, Stdout: &both, Stderr: &both})
	if err != nil || err2 != nil || code != 0 || code2 == 0 || !strings.HasPrefix(both.String(), "to both\n") || !strings.Contains(both.String(), "nonexistent-executortest") {
		c.errorf("echo then cat of a missing file with one writer for Stdout and Stderr = exit %d, %v, then %d, %v, output %q; want both outputs in it",
			code, err, code2, err2, both.String())
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func checkEnvironment(c *checker) {
	in := c.started(executor.Spec{})
	r := c.exec(in, executor.Cmd{Args: []string{"env"}, Env: map[string]string{"EXECUTORTEST_VAR": "a value with spaces"}})
	if r.ExitCode != 0 || !slices.Contains(strings.Split(string(r.Stdout), "\n"), "EXECUTORTEST_VAR=a value with spaces") {
		c.errorf("env with Env {EXECUTORTEST_VAR: \"a value with spaces\"} = exit %d, stdout %q; want the variable listed", r.ExitCode, r.Stdout)
	}
	r = c.exec(in, cmd("env"))
	if r.ExitCode != 0 || strings.Contains(string(r.Stdout), "EXECUTORTEST_VAR=") {
		c.errorf("env without Env = exit %d, stdout %q; want no EXECUTORTEST_VAR (one command's environment leaked into another)", r.ExitCode, r.Stdout)
	}
	c.wantOutput(in, executor.Cmd{Args: []string{"pwd"}, Dir: "/tmp"}, "/tmp\n")
	c.wantOutput(in, executor.Cmd{Args: []string{"pwd"}, Dir: "/"}, "/\n")
	c.wantOutput(in, cmd("id", "-u"), "0\n")
	c.wantOutput(in, cmd("id", "-g"), "0\n")
}

func checkUsers(c *checker) {
	in := c.started(executor.Spec{})
	u, err := in.EnsureUser(c.ctx, c.opts.User)
	if err != nil {
		c.fatalf("EnsureUser(%s): %v", c.opts.User, err)
	}
	if u.Name != c.opts.User || u.UID <= 0 || u.GID <= 0 || !path.IsAbs(u.Home) {
		c.errorf("EnsureUser(%s) = %+v; want the name, a non-root uid and gid, an absolute home", c.opts.User, u)
	}
	again, err := in.EnsureUser(c.ctx, c.opts.User)
	if err != nil || again != u {
		c.errorf("EnsureUser(%s) again = %+v, %v; want %+v, nil", c.opts.User, again, err, u)
	}
	uid, gid := strconv.Itoa(u.UID), strconv.Itoa(u.GID)
	c.wantOutput(in, executor.Cmd{Args: []string{"id", "-u"}, User: u.Name}, uid+"\n")
	c.wantOutput(in, executor.Cmd{Args: []string{"id", "-g"}, User: u.Name}, gid+"\n")
	c.wantOutput(in, executor.Cmd{Args: []string{"id", "-u"}, User: uid}, uid+"\n")
	c.wantOutput(in, executor.Cmd{Args: []string{"pwd"}, User: u.Name, Dir: "/tmp"}, "/tmp\n")
	_, err = in.Exec(c.ctx, executor.Cmd{Args: []string{"true"}, User: "executortest-nobody"})
	c.wantIs("Exec as an unknown user", err, executor.ErrNotFound, "executortest-nobody")
	_, err = in.EnsureUser(c.ctx, "Bad User")
	c.wantIs("EnsureUser(\"Bad User\")", err, executor.ErrInvalid, "")

	// Permissions hold for the unprivileged user.
	c.wantNil("Push root-only file", in.Push(c.ctx, "/tmp/executortest-secret", strings.NewReader("secret"), executor.FileOptions{Mode: 0o600}))
	c.wantNil("Push user's file", in.Push(c.ctx, "/tmp/executortest-mine", strings.NewReader("mine"), executor.FileOptions{Mode: 0o600, UID: u.UID, GID: u.GID}))
	r := c.exec(in, executor.Cmd{Args: []string{"cat", "/tmp/executortest-secret"}, User: u.Name})
	if r.ExitCode == 0 || len(r.Stdout) != 0 {
		c.errorf("cat of a root-only 0600 file as %s = exit %d, stdout %q; want a failure", u.Name, r.ExitCode, r.Stdout)
	}
	c.wantOutput(in, executor.Cmd{Args: []string{"cat", "/tmp/executortest-mine"}, User: u.Name}, "mine")
	c.wantOutput(in, executor.Cmd{Args: []string{"cat", "/tmp/executortest-secret"}}, "secret")
	c.wantOutput(in, executor.Cmd{Args: []string{"touch", path.Join(u.Home, "made-by-user")}, User: u.Name}, "")
	if info, err := in.Stat(c.ctx, path.Join(u.Home, "made-by-user")); err != nil || info.UID != u.UID {
		c.errorf("file touched by %s in its home: Stat = %+v, %v; want owner uid %d", u.Name, info, err, u.UID)
	}
}

func checkCancel(c *checker) {
	in := c.started(executor.Spec{})
	// A cancelled context kills a long command; Exec returns ctx's error.
	ctx, cancel := context.WithCancel(c.ctx)
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		code, err := in.Exec(ctx, cmd("sleep", "1000"))
		done <- result{code, err}
	}()
	time.Sleep(500 * time.Millisecond)
	cancel()
	select {
	case r := <-done:
		if !errors.Is(r.err, context.Canceled) {
			c.errorf("Exec(sleep 1000) with its context cancelled = %d, %v; want an error wrapping context.Canceled", r.code, r.err)
		}
	case <-time.After(time.Minute):
		c.fatalf("Exec(sleep 1000) did not return within a minute of its context being cancelled")
	}

	dctx, dcancel := context.WithTimeout(c.ctx, 500*time.Millisecond)
	code, err := in.Exec(dctx, cmd("sleep", "1000"))
	dcancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		c.errorf("Exec(sleep 1000) past its context's deadline = %d, %v; want an error wrapping context.DeadlineExceeded", code, err)
	}

	code, err = in.Exec(c.ctx, executor.Cmd{Args: []string{"sleep", "1000"}, Timeout: 500 * time.Millisecond})
	c.wantIs(fmt.Sprintf("Exec(sleep 1000, Timeout 500ms) (exit %d)", code), err, executor.ErrTimeout, "")

	code, err = in.Exec(c.ctx, executor.Cmd{Args: []string{"echo", "quick"}, Timeout: time.Minute})
	if err != nil || code != 0 {
		c.errorf("Exec(echo, Timeout 1m) = %d, %v; want 0, nil", code, err)
	}
	c.wantOutput(in, cmd("echo", "still usable"), "still usable\n")
	c.wantStarted(in, true, "after killed commands")
}

func checkFiles(c *checker) {
	in := c.started(executor.Spec{})
	const p = "/tmp/executortest/a/b/file.txt"
	content := "round trip\n"
	c.wantNil("Push with MkdirAll", in.Push(c.ctx, p, strings.NewReader(content), executor.FileOptions{Mode: 0o640, MkdirAll: true}))
	got, info, err := c.pull(in, p)
	if err != nil || string(got) != content {
		c.errorf("Pull(%s) = %q, %v; want %q", p, got, err, content)
	}
	want := executor.FileInfo{Path: p, Mode: 0o640, Size: int64(len(content))}
	if info != want {
		c.errorf("Pull(%s) info = %+v; want %+v", p, info, want)
	}
	if st, err := in.Stat(c.ctx, p); err != nil || st != want {
		c.errorf("Stat(%s) = %+v, %v; want %+v", p, st, err, want)
	}
	if st, err := in.Stat(c.ctx, "/tmp/executortest/a/b"); err != nil || !st.IsDir() {
		c.errorf("Stat of a parent made by MkdirAll = %+v, %v; want a directory", st, err)
	}
	c.wantOutput(in, cmd("cat", p), content)

	c.wantNil("Push with owner", in.Push(c.ctx, p, strings.NewReader("owned"), executor.FileOptions{UID: 1234, GID: 2345, Mode: 0o600}))
	if st, err := in.Stat(c.ctx, p); err != nil || st.UID != 1234 || st.GID != 2345 || st.Mode != 0o600 || st.Size != 5 {
		c.errorf("Stat after replacing with owner 1234:2345 mode 0600 = %+v, %v", st, err)
	}
	c.wantNil("Push with default mode", in.Push(c.ctx, "/tmp/executortest/default", strings.NewReader(""), executor.FileOptions{}))
	if st, err := in.Stat(c.ctx, "/tmp/executortest/default"); err != nil || st.Mode != 0o644 || st.UID != 0 || st.Size != 0 {
		c.errorf("Stat of a file pushed with zero FileOptions = %+v, %v; want mode 0644, root, empty", st, err)
	}
	c.wantNil("Push executable", in.Push(c.ctx, "/tmp/executortest/x", strings.NewReader("#!/bin/sh\n"), executor.FileOptions{Mode: 0o755}))
	if st, err := in.Stat(c.ctx, "/tmp/executortest/x"); err != nil || st.Mode != 0o755 {
		c.errorf("Stat of a file pushed with mode 0755 = %+v, %v", st, err)
	}

	big := randomBytes(3<<20 + 17)
	c.wantNil("Push 3 MiB", in.Push(c.ctx, "/tmp/executortest/big", bytes.NewReader(big), executor.FileOptions{}))
	if got, info, err := c.pull(in, "/tmp/executortest/big"); err != nil || !bytes.Equal(got, big) || info.Size != int64(len(big)) {
		c.errorf("Pull of 3 MiB = %d bytes (equal %v), %+v, %v", len(got), bytes.Equal(got, big), info, err)
	}

	c.wantIs("Push into a missing directory", in.Push(c.ctx, "/tmp/executortest-missing/f", strings.NewReader("x"), executor.FileOptions{}), executor.ErrNotFound, "")
	c.wantIs("Push to a relative path", in.Push(c.ctx, "tmp/relative", strings.NewReader("x"), executor.FileOptions{}), executor.ErrInvalid, "tmp/relative")
	_, _, err = c.pull(in, "tmp/relative")
	c.wantIs("Pull of a relative path", err, executor.ErrInvalid, "tmp/relative")
	_, _, err = c.pull(in, "/tmp/executortest-missing")
	c.wantIs("Pull of a missing file", err, executor.ErrNotFound, "/tmp/executortest-missing")
	_, err = in.Stat(c.ctx, "/tmp/executortest-missing")
	c.wantIs("Stat of a missing file", err, executor.ErrNotFound, "/tmp/executortest-missing")
	_, err = in.Stat(c.ctx, "relative")
	c.wantIs("Stat of a relative path", err, executor.ErrInvalid, "relative")
}

func checkMkdir(c *checker) {
	in := c.started(executor.Spec{})
	const d = "/tmp/executortest-mkdir/a/b"
	c.wantNil("Mkdir", in.Mkdir(c.ctx, d, executor.FileOptions{UID: 1234, GID: 1234, Mode: 0o750}))
	if st, err := in.Stat(c.ctx, d); err != nil || !st.IsDir() || st.Mode.Perm() != 0o750 || st.UID != 1234 || st.GID != 1234 {
		c.errorf("Stat(%s) after Mkdir(mode 0750, owner 1234) = %+v, %v", d, st, err)
	}
	c.wantNil("Mkdir of an existing directory", in.Mkdir(c.ctx, d, executor.FileOptions{}))
	c.wantNil("Push into a made directory", in.Push(c.ctx, d+"/f", strings.NewReader("f"), executor.FileOptions{}))
	if st, err := in.Stat(c.ctx, "/tmp"); err != nil || !st.IsDir() {
		c.errorf("Stat(/tmp) = %+v, %v; want a directory", st, err)
	}
	if err := in.Mkdir(c.ctx, d+"/f", executor.FileOptions{}); err == nil {
		c.errorf("Mkdir over a regular file succeeded")
	}
	c.wantIs("Mkdir of a relative path", in.Mkdir(c.ctx, "relative/dir", executor.FileOptions{}), executor.ErrInvalid, "relative/dir")
}

// tree is the directory tree Trees pushes and pulls: path → mode and
// content (directories end in /).
var tree = []struct {
	path    string
	mode    fs.FileMode
	content string
}{
	{"a.txt", 0o644, "alpha\n"},
	{"run.sh", 0o755, "#!/bin/sh\necho run\n"},
	{"secret", 0o600, "s3cret"},
	{"empty/", 0o755, ""},
	{"sub/", 0o750, ""},
	{"sub/nested/", 0o700, ""},
	{"sub/nested/deep.txt", 0o640, "deep\n"},
	{"sub/zero", 0o644, ""},
}

func writeTree(dir string) error {
	for _, e := range tree {
		p := filepath.Join(dir, filepath.FromSlash(strings.TrimSuffix(e.path, "/")))
		var err error
		if strings.HasSuffix(e.path, "/") {
			err = os.Mkdir(p, 0o700)
		} else {
			err = os.WriteFile(p, []byte(e.content), 0o600)
		}
		if err == nil {
			err = os.Chmod(p, e.mode)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (c *checker) compareTree(what, dir string) {
	var got []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if fi.IsDir() {
			rel += "/"
		}
		got = append(got, rel)
		for _, e := range tree {
			if e.path != rel {
				continue
			}
			if fi.Mode().Perm() != e.mode {
				c.errorf("%s: %s has mode %v; want %v", what, rel, fi.Mode().Perm(), e.mode)
			}
			if !fi.IsDir() {
				if b, err := os.ReadFile(p); err != nil || string(b) != e.content {
					c.errorf("%s: %s = %q, %v; want %q", what, rel, b, err, e.content)
				}
			}
		}
		return nil
	})
	if err != nil {
		c.errorf("%s: walk: %v", what, err)
	}
	var want []string
	for _, e := range tree {
		want = append(want, e.path)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		c.errorf("%s: entries %q; want %q", what, got, want)
	}
}

func checkTrees(c *checker) {
	in := c.started(executor.Spec{})
	host, err := os.MkdirTemp("", "executortest-tree-")
	if err != nil {
		c.fatalf("host temp dir: %v", err)
	}
	defer os.RemoveAll(host)
	src := filepath.Join(host, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		c.fatalf("host dir: %v", err)
	}
	if err := writeTree(src); err != nil {
		c.fatalf("write host tree: %v", err)
	}
	const dst = "/tmp/executortest-tree"
	if !c.wantNil("PushTree", in.PushTree(c.ctx, src, dst, executor.FileOptions{UID: 1234, GID: 1234})) {
		return
	}
	for _, e := range tree {
		p := path.Join(dst, strings.TrimSuffix(e.path, "/"))
		st, err := in.Stat(c.ctx, p)
		if err != nil || st.Mode.Perm() != e.mode || st.IsDir() != strings.HasSuffix(e.path, "/") || st.UID != 1234 || st.GID != 1234 {
			c.errorf("Stat(%s) after PushTree = %+v, %v; want mode %v, owner 1234:1234", p, st, err, e.mode)
		}
	}
	c.wantOutput(in, cmd("cat", dst+"/sub/nested/deep.txt"), "deep\n")

	out := filepath.Join(host, "out")
	if c.wantNil("PullTree", in.PullTree(c.ctx, dst, out)) {
		c.compareTree("PullTree of a pushed tree", out)
	}
	_, err = in.Stat(c.ctx, dst+"/missing")
	c.wantIs("Stat in a pushed tree", err, executor.ErrNotFound, "")
	c.wantIs("PullTree of a missing directory", in.PullTree(c.ctx, "/tmp/executortest-no-tree", filepath.Join(host, "none")), executor.ErrNotFound, "")
	c.wantIs("PushTree to a relative path", in.PushTree(c.ctx, src, "relative", executor.FileOptions{}), executor.ErrInvalid, "relative")
}

func checkMounts(c *checker) {
	one, two := c.started(executor.Spec{}), c.started(executor.Spec{})
	mkdir := func() string {
		d, err := os.MkdirTemp(c.opts.MountRoot, "executortest-mount-")
		if err != nil {
			c.fatalf("host mount source: %v", err)
		}
		c.defers(func() { os.RemoveAll(d) })
		// Writable by the instance's root even when it is mapped to an
		// unprivileged host uid.
		if err := os.Chmod(d, 0o777); err != nil {
			c.fatalf("chmod mount source: %v", err)
		}
		return d
	}
	shared, other, ro := mkdir(), mkdir(), mkdir()
	if err := os.WriteFile(filepath.Join(shared, "hello.txt"), []byte("shared\n"), 0o644); err != nil {
		c.fatalf("write host file: %v", err)
	}
	alias := "executortest/shared-" + random(3)
	mount := func(in executor.Instance, alias, src string, opts executor.MountOptions) string {
		p, err := in.Mount(c.ctx, alias, src, opts)
		if err != nil {
			c.fatalf("Mount(%s, %s, %s): %v", in.Name(), alias, src, err)
		}
		return p
	}
	unmount := func(in executor.Instance, alias string) {
		c.wantNil(fmt.Sprintf("Unmount(%s, %s)", in.Name(), alias), in.Unmount(c.ctx, alias))
	}
	p1 := mount(one, alias, shared, executor.MountOptions{})
	if !strings.HasPrefix(p1, "/data/") || path.Clean(p1) != p1 || len(p1) <= len("/data/") {
		c.errorf("Mount path %q; want /data/<hash of alias>", p1)
	}
	if p := mount(one, alias, shared, executor.MountOptions{}); p != p1 {
		c.errorf("second Mount of %s in %s = %s; want the same path %s", alias, one.Name(), p, p1)
	}
	if p := mount(two, alias, shared, executor.MountOptions{}); p != p1 {
		c.errorf("Mount of %s in another instance = %s; want the same path %s", alias, p, p1)
	}
	c.wantOutput(one, cmd("cat", p1+"/hello.txt"), "shared\n")
	c.wantOutput(two, cmd("cat", p1+"/hello.txt"), "shared\n")
	if err := os.WriteFile(filepath.Join(shared, "later.txt"), []byte("later\n"), 0o644); err != nil {
		c.fatalf("write host file: %v", err)
	}
	c.wantOutput(one, cmd("cat", p1+"/later.txt"), "later\n")
	c.wantOutput(one, cmd("touch", p1+"/from-instance"), "")
	if _, err := os.Stat(filepath.Join(shared, "from-instance")); err != nil {
		c.errorf("file touched in the instance at %s is not on the host: %v", p1, err)
	}

	alias2 := "executortest/other-" + random(3)
	p2 := mount(one, alias2, other, executor.MountOptions{})
	if p2 == p1 || !strings.HasPrefix(p2, "/data/") {
		c.errorf("Mount of a second alias = %s; want another /data/ path than %s", p2, p1)
	}

	// One of two references released: still there; both: gone.
	unmount(one, alias)
	c.wantOutput(one, cmd("cat", p1+"/hello.txt"), "shared\n")
	unmount(one, alias)
	if r := c.exec(one, cmd("cat", p1+"/hello.txt")); r.ExitCode == 0 {
		c.errorf("%s still visible in %s after the last Unmount of %s", p1+"/hello.txt", one.Name(), alias)
	}
	c.wantIs("Unmount beyond the count", one.Unmount(c.ctx, alias), executor.ErrNotMounted, alias)
	c.wantOutput(two, cmd("cat", p1+"/hello.txt"), "shared\n") // its own reference
	if p := mount(one, alias, shared, executor.MountOptions{}); p != p1 {
		c.errorf("Mount after release = %s; want %s", p, p1)
	}
	c.wantOutput(one, cmd("cat", p1+"/hello.txt"), "shared\n")
	unmount(one, alias)
	unmount(two, alias)
	unmount(one, alias2)

	aliasRO := "executortest/ro-" + random(3)
	pro := mount(two, aliasRO, ro, executor.MountOptions{ReadOnly: true})
	if r := c.exec(two, cmd("touch", pro+"/new")); r.ExitCode == 0 {
		c.errorf("touch in a read-only mount succeeded")
	}
	if _, err := os.Stat(filepath.Join(ro, "new")); err == nil {
		c.errorf("a read-only mount let the instance create a host file")
	}
	unmount(two, aliasRO)

	_, err := one.Mount(c.ctx, "executortest/forbidden", c.opts.ForbiddenSource, executor.MountOptions{})
	c.wantIs("Mount of "+c.opts.ForbiddenSource, err, executor.ErrNotAllowed, c.opts.ForbiddenSource)
	_, err = one.Mount(c.ctx, "executortest/relative", "relative/dir", executor.MountOptions{})
	c.wantIs("Mount of a relative source", err, executor.ErrNotAllowed, "relative/dir")
	missing := filepath.Join(shared, "missing")
	_, err = one.Mount(c.ctx, "executortest/missing", missing, executor.MountOptions{})
	c.wantIs("Mount of a missing source", err, executor.ErrNotAllowed, missing)
	c.wantIs("Unmount of an alias never mounted", one.Unmount(c.ctx, "executortest/never"), executor.ErrNotMounted, "executortest/never")
}

func checkStats(c *checker) {
	in := c.started(executor.Spec{})
	s, err := in.Stats(c.ctx)
	if err != nil || s.CPUs < 1 || s.MemoryUsed == 0 {
		c.errorf("Stats of a running instance = %+v, %v; want CPUs >= 1 and memory in use", s, err)
	}
	s2, err := c.ex.Statistics(c.ctx, in)
	if err != nil || s2.CPUs != s.CPUs {
		c.errorf("Statistics = %+v, %v; want the CPUs of Stats (%d)", s2, err, s.CPUs)
	}
}

func checkConcurrency(c *checker) {
	in := c.started(executor.Spec{})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := fmt.Sprintf("worker %d\n", i)
			r, err := executor.Output(c.ctx, in, cmd("echo", "worker", strconv.Itoa(i)))
			if err != nil || r.ExitCode != 0 || string(r.Stdout) != want {
				c.errorf("concurrent Exec %d = %q, %d, %v; want %q", i, r.Stdout, r.ExitCode, err, want)
			}
			p := fmt.Sprintf("/tmp/executortest-conc-%d", i)
			if err := in.Push(c.ctx, p, strings.NewReader(want), executor.FileOptions{}); err != nil {
				c.errorf("concurrent Push %d: %v", i, err)
				return
			}
			if got, _, err := c.pull(in, p); err != nil || string(got) != want {
				c.errorf("concurrent Pull %d = %q, %v; want %q", i, got, err, want)
			}
		}()
	}
	wg.Wait()
}
