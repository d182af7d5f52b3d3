package instance_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/lxc/incus/v6/shared/api"
	"github.com/matryer/is"
)

// recordedFiles lists the instance's exec-output files; the listing fails
// when no exec ever recorded output there (incusd creates the directory on
// the first recorded exec).
func recordedFiles(t *testing.T, d *incustest.Daemon, name string) []string {
	t.Helper()
	resp, _, err := d.Client.RawQuery(http.MethodGet, "/1.0/instances/"+name+"/logs/exec-output", nil, "")
	if err != nil {
		t.Fatalf("list exec-output of %s: %v", name, err)
	}
	var files []string
	if err := resp.MetadataAsStruct(&files); err != nil {
		t.Fatal(err)
	}
	return files
}

// TestExecRecordsAndRemovesOutput runs commands that end every way there
// is; each must have used the recorded path and left no file behind.
func TestExecRecordsAndRemovesOutput(t *testing.T) {
	t.Parallel()
	d, m, _ := setup(t, instance.Config{KillGrace: 500 * time.Millisecond})
	in := launch(t, m, instance.Spec{})
	execEndings(t, in, func(t *testing.T) {
		instance.WaitCleanups(m) // the files go behind Exec's return
		is.New(t).Equal(recordedFiles(t, d, in.Name()), []string{})
	})
}

// execEndings runs commands that end every way there is in in, checking
// what each gave the caller, then calls after.
func execEndings(t *testing.T, in *instance.Instance, after func(t *testing.T)) {
	var long strings.Builder
	for i := 1; i <= 100000; i++ {
		fmt.Fprintf(&long, "%d\n", i)
	}
	for _, tc := range []struct {
		name           string
		args           []string
		timeout        time.Duration
		cancelAfter    string // cancel ctx once stdout has this
		code           int
		stdout, stderr string
		err            error
	}{
		{name: "success", args: []string{"sh", "-c", "echo out; echo err >&2"}, stdout: "out\n", stderr: "err\n"},
		{name: "failure", args: []string{"sh", "-c", "echo out; exit 3"}, code: 3, stdout: "out\n"},
		{name: "not found", args: []string{"no-such-command"}, code: 127},
		{name: "not executable", args: []string{"/etc/passwd"}, code: 126},
		{name: "large", args: []string{"seq", "1", "100000"}, stdout: long.String()},
		{name: "marker look-alike", args: []string{"sh", "-c", "echo 'incusexec-exec-pid 1' >&2; printf 'no newline' >&2"}, stderr: "incusexec-exec-pid 1\nno newline"},
		{name: "timeout", args: []string{"sh", "-c", "echo before; exec sleep 60"}, timeout: 300 * time.Millisecond, code: 143, stdout: "before\n", err: instance.ErrTimeout},
		{name: "cancel", args: []string{"sh", "-c", "echo ready; exec sleep 60"}, cancelAfter: "ready\n", code: 143, stdout: "ready\n", err: context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var out, errb bytes.Buffer
			var stdout io.Writer = &out
			if tc.cancelAfter != "" {
				stdout = cancelOn{w: &out, want: tc.cancelAfter, cancel: cancel}
			}
			code, err := in.Exec(ctx, executor.Cmd{Args: tc.args, Stdout: stdout, Stderr: &errb, Timeout: tc.timeout})
			if tc.err == nil {
				is.NoErr(err)
			} else {
				is.True(errors.Is(err, tc.err))
			}
			is.Equal(code, tc.code)
			is.Equal(out.String(), tc.stdout)
			is.Equal(errb.String(), tc.stderr)
			after(t)
		})
	}
}

// cancelOn cancels once what was written ends with want.
type cancelOn struct {
	w      *bytes.Buffer
	want   string
	cancel context.CancelFunc
}

func (c cancelOn) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	if strings.HasSuffix(c.w.String(), c.want) {
		c.cancel()
	}
	return n, err
}

// TestExecFollowsRecordedOutput lets the command finish only once its first
// line has reached the caller: without live following it would never end.
func TestExecFollowsRecordedOutput(t *testing.T) {
	t.Parallel()
	_, m, _ := setup(t, instance.Config{})
	in := launch(t, m, instance.Spec{})
	execFollows(t, in)
}

// execFollows checks that in's Exec hands on a command's output while it
// runs.
func execFollows(t *testing.T, in *instance.Instance) {
	is := is.New(t)
	seen := make(chan struct{})
	w := &notifyWriter{on: "started\n", seen: seen}
	// The touch is an Exec of its own, which may still be reading its
	// (empty) output when the loop below has seen the file and ended: the
	// test waits for it rather than cancel it on its way out.
	touched := make(chan error, 1)
	go func() {
		select {
		case <-seen:
			code, err := in.Exec(ctxFor(t, time.Minute), executor.Cmd{Args: []string{"touch", "/tmp/go-on"}})
			if err == nil && code != 0 {
				err = fmt.Errorf("touch exited %d", code)
			}
			touched <- err
		case <-time.After(50 * time.Second):
			touched <- errors.New("the command's first line was not followed within 50 s")
		}
	}()
	code, err := in.Exec(ctxFor(t, time.Minute), executor.Cmd{
		Args:    []string{"sh", "-c", "echo started; while [ ! -e /tmp/go-on ]; do sleep 0.1; done; echo done"},
		Stdout:  w,
		Timeout: 55 * time.Second,
	})
	is.NoErr(<-touched)
	is.NoErr(err)
	is.Equal(code, 0)
	is.Equal(w.buf.String(), "started\ndone\n")
}

type notifyWriter struct {
	buf  bytes.Buffer
	on   string
	seen chan struct{}
}

func (w *notifyWriter) Write(p []byte) (int, error) {
	n, err := w.buf.Write(p)
	if w.seen != nil && strings.Contains(w.buf.String(), w.on) {
		close(w.seen)
		w.seen = nil
	}
	return n, err
}

// TestExecOutputEndpointServesRanges checks on the daemon what following
// relies on: the exec-output endpoint answers a Range request with the
// file's tail (206), and a range at its end with 416.
func TestExecOutputEndpointServesRanges(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	d, m, _ := setup(t, instance.Config{})
	in := launch(t, m, instance.Spec{})
	id := rawExec(t, d, in.Name(), "printf", "0123456789")
	rawWait(t, d, id)
	file := "/1.0/instances/" + in.Name() + "/logs/exec-output/exec_" + id + ".stdout"
	info, err := d.Client.GetConnectionInfo()
	is.NoErr(err)
	get := func(rng string) (int, string) {
		req, err := http.NewRequest(http.MethodGet, info.URL+file, nil)
		is.NoErr(err)
		req.Header.Set("Range", rng)
		resp, err := d.Client.DoHTTP(req)
		is.NoErr(err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		is.NoErr(err)
		return resp.StatusCode, string(b)
	}
	code, body := get("bytes=4-")
	is.Equal(code, http.StatusPartialContent)
	is.Equal(body, "456789")
	code, _ = get("bytes=10-")
	is.Equal(code, http.StatusRequestedRangeNotSatisfiable)
	for _, suffix := range []string{".stdout", ".stderr"} {
		_, _, err := d.Client.RawQuery(http.MethodDelete, strings.TrimSuffix(file, ".stdout")+suffix, nil, "")
		is.NoErr(err)
	}
	is.Equal(recordedFiles(t, d, in.Name()), []string{})
}

// TestExecOutlastsOperationWaits runs a command longer than several of the
// long polls that await its operation (shortened to a second): a poll that
// times out must not end the exec. Not parallel: it changes a package
// setting.
func TestExecOutlastsOperationWaits(t *testing.T) {
	is := is.New(t)
	_, m, _ := setup(t, instance.Config{})
	in := launch(t, m, instance.Spec{})
	defer instance.SetOpWaitSecs(1)()
	var out bytes.Buffer
	code, err := in.Exec(ctxFor(t, time.Minute), executor.Cmd{Args: []string{"sh", "-c", "sleep 3; echo late"}, Stdout: &out})
	is.NoErr(err)
	is.Equal(code, 0)
	is.Equal(out.String(), "late\n")
}

// TestExecStdinRecorded feeds stdin to recorded execs: all of it arrives,
// a command that does not read it or stops early is fine, and no FIFO is
// left in /tmp.
func TestExecStdinRecorded(t *testing.T) {
	t.Parallel()
	d, m, _ := setup(t, instance.Config{KillGrace: 500 * time.Millisecond})
	in := launch(t, m, instance.Spec{})
	execStdin(t, in, func(t *testing.T) {
		instance.WaitCleanups(m)
		is.New(t).Equal(recordedFiles(t, d, in.Name()), []string{})
	})
}

// execStdin feeds stdin to in's commands every way there is, checking what
// each gave the caller, and calls after each.
func execStdin(t *testing.T, in *instance.Instance, after func(t *testing.T)) {
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	for _, tc := range []struct {
		name    string
		args    []string
		user    string
		stdin   io.Reader
		timeout time.Duration
		code    int
		stdout  string
		err     error
	}{
		{name: "cat", args: []string{"cat"}, stdin: strings.NewReader("fed\n"), stdout: "fed\n"},
		{name: "large", args: []string{"cat"}, stdin: strings.NewReader(big), stdout: big},
		{name: "as a user", args: []string{"sh", "-c", "id -u; cat"}, user: "4321", stdin: strings.NewReader("x"), stdout: "4321\nx"},
		{name: "not read", args: []string{"echo", "ok"}, stdin: strings.NewReader("ignored"), stdout: "ok\n"},
		{name: "endless, read in part", args: []string{"head", "-c", "5"}, stdin: endless{}, stdout: "yyyyy"},
		{name: "empty", args: []string{"wc", "-c"}, stdin: strings.NewReader(""), stdout: "0\n"},
		{name: "timeout while reading", args: []string{"cat"}, stdin: endlessSlow{}, timeout: time.Second, code: 143, err: instance.ErrTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			var out, errb bytes.Buffer
			code, err := in.Exec(ctxFor(t, time.Minute), executor.Cmd{Args: tc.args, User: tc.user, Stdin: tc.stdin, Stdout: &out, Stderr: &errb, Timeout: tc.timeout})
			if tc.err == nil {
				is.NoErr(err)
			} else {
				is.True(errors.Is(err, tc.err))
			}
			is.Equal(code, tc.code)
			if tc.stdout != "" || tc.err == nil {
				is.Equal(out.Len(), len(tc.stdout))
				is.True(out.String() == tc.stdout)
			}
			is.Equal(errb.String(), "")
			after(t)
		})
	}
	is := is.New(t)
	is.True(!strings.Contains(run(t, in, "ls", "-a", "/tmp"), "incusexec-stdin")) // no FIFO left
}

type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'y'
	}
	return len(p), nil
}

// endlessSlow gives a line every 100ms, for ever.
type endlessSlow struct{}

func (endlessSlow) Read(p []byte) (int, error) {
	time.Sleep(100 * time.Millisecond)
	return copy(p, "line\n"), nil
}

// rawExec starts a recorded exec as a host would and returns its
// operation's id. (Plain requests: the client's operation wrapper races
// with concurrent users of the same client in v6.23.)
func rawExec(t *testing.T, d *incustest.Daemon, name string, args ...string) string {
	t.Helper()
	resp, _, err := d.Client.RawQuery(http.MethodPost, "/1.0/instances/"+name+"/exec", api.InstanceExecPost{Command: args, RecordOutput: true}, "")
	if err != nil {
		t.Fatalf("exec %q: %v", args, err)
	}
	op, err := resp.MetadataAsOperation()
	if err != nil {
		t.Fatal(err)
	}
	return op.ID
}

func rawWait(t *testing.T, d *incustest.Daemon, id string) {
	t.Helper()
	resp, _, err := d.Client.RawQuery(http.MethodGet, "/1.0/operations/"+id+"/wait?timeout=60", nil, "")
	if err != nil {
		t.Fatalf("wait for %s: %v", id, err)
	}
	var op api.Operation
	if err := resp.MetadataAsStruct(&op); err != nil || op.StatusCode != api.Success {
		t.Fatalf("operation %s: %v %v", id, op.Status, err)
	}
}

// TestGCSweepsDeadExecOutput leaves the files of a finished recorded exec
// behind, as a host killed before fetching them would: GC removes them from
// an instance it keeps once they are old enough, and never touches a
// running exec's files. Not parallel: it changes a package setting.
func TestGCSweepsDeadExecOutput(t *testing.T) {
	is := is.New(t)
	d, m, logs := setup(t, instance.Config{})
	in := launch(t, m, instance.Spec{})
	defer func() {
		if t.Failed() {
			t.Log(logs.String())
		}
	}()
	dead := rawExec(t, d, in.Name(), "echo", "left")
	rawWait(t, d, dead)
	running := rawExec(t, d, in.Name(), "sleep", "600")
	prefix := "/1.0/instances/" + in.Name() + "/logs/exec-output/exec_"
	all := []string{prefix + dead + ".stderr", prefix + dead + ".stdout", prefix + running + ".stderr", prefix + running + ".stdout"}
	slices.Sort(all)
	keep := instance.GCOptions{Keep: func(name string) bool { return name == in.Name() }}

	_, err := m.GC(ctxFor(t, time.Minute), keep)
	is.NoErr(err)
	files := recordedFiles(t, d, in.Name())
	slices.Sort(files)
	is.Equal(files, all) // too recent: the exec that made them may be reading them

	defer instance.SetExecLeftoverAge(0)()
	_, err = m.GC(ctxFor(t, time.Minute), keep)
	is.NoErr(err)
	files = recordedFiles(t, d, in.Name())
	slices.Sort(files)
	is.Equal(files, []string{prefix + running + ".stderr", prefix + running + ".stdout"}) // the dead exec's files are gone, the running one's kept
}

// TestExecKeepsSmallOutputUntilDeletion: with KeepExecOutputUpTo, the
// files of a command that ended with little output stay (no requests
// spent on them) and go with the instance; larger output, and that of a
// command stopped by its timeout, is deleted as usual.
func TestExecKeepsSmallOutputUntilDeletion(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	d, m, _ := setup(t, instance.Config{KillGrace: 500 * time.Millisecond, KeepExecOutputUpTo: 100})
	in, err := m.Create(ctxFor(t, 2*time.Minute), instance.Spec{Image: incustest.BusyboxAlias})
	is.NoErr(err)
	ctx := ctxFor(t, time.Minute)
	run := func(cmd executor.Cmd) (string, error) {
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, io.Discard
		_, err := in.Exec(ctx, cmd)
		instance.WaitCleanups(m)
		return out.String(), err
	}
	out, err := run(executor.Cmd{Args: []string{"sh", "-c", "echo small; exit 3"}})
	is.NoErr(err)
	is.Equal(out, "small\n")
	kept := recordedFiles(t, d, in.Name())
	slices.Sort(kept)
	is.Equal(len(kept), 2) // its stdout and stderr

	out, err = run(executor.Cmd{Args: []string{"seq", "1", "100"}}) // 292 bytes
	is.NoErr(err)
	is.Equal(len(out), 292)
	_, err = run(executor.Cmd{Args: []string{"sh", "-c", "echo x; exec sleep 60"}, Timeout: 300 * time.Millisecond})
	is.True(errors.Is(err, instance.ErrTimeout))
	left := recordedFiles(t, d, in.Name())
	slices.Sort(left)
	is.Equal(left, kept) // only the small output stayed

	// The server keeps them in the instance's own directory.
	dir := filepath.Join(d.Dir, "containers", in.Name(), "exec-output")
	files, err := os.ReadDir(dir)
	is.NoErr(err)
	is.Equal(len(files), 2)
	is.NoErr(in.Delete(ctx))
	_, err = os.Stat(dir)
	is.True(errors.Is(err, fs.ErrNotExist)) // gone with the instance
}
