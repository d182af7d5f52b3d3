package instance_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/instance"
	"github.com/matryer/is"
)

func TestExecStatusStreamsAndEnvironment(t *testing.T) {
	t.Parallel()
	_, m, _ := setup(t, instance.Config{})
	in := launch(t, m, instance.Spec{})
	for _, tc := range []struct {
		name           string
		cmd            executor.Cmd
		code           int
		stdout, stderr string
		err            error
	}{
		{name: "true", cmd: executor.Cmd{Args: []string{"true"}}, code: 0},
		{name: "false", cmd: executor.Cmd{Args: []string{"false"}}, code: 1},
		{name: "missing command", cmd: executor.Cmd{Args: []string{"no-such-command"}}, code: 127},
		{name: "missing in shell", cmd: executor.Cmd{Args: []string{"sh", "-c", "no-such-command"}}, code: 127, stderr: "sh: no-such-command: not found\n"},
		{name: "killed", cmd: executor.Cmd{Args: []string{"sh", "-c", "kill -9 $$"}}, code: 137},
		{name: "streams apart", cmd: executor.Cmd{Args: []string{"sh", "-c", "echo out; echo err >&2; exit 3"}}, code: 3, stdout: "out\n", stderr: "err\n"},
		{name: "stdin", cmd: executor.Cmd{Args: []string{"cat"}, Stdin: strings.NewReader("fed\n")}, stdout: "fed\n"},
		{name: "env and dir", cmd: executor.Cmd{Args: []string{"sh", "-c", "echo $GREETING; pwd"}, Env: map[string]string{"GREETING": "hi"}, Dir: "/etc"}, stdout: "hi\n/etc\n"},
		{name: "root by default", cmd: executor.Cmd{Args: []string{"id", "-u"}}, stdout: "0\n"},
		{name: "numeric user", cmd: executor.Cmd{Args: []string{"sh", "-c", "id -u; id -g; echo $HOME"}, User: "4321"}, stdout: "4321\n4321\n/\n"},
		{name: "uid and gid", cmd: executor.Cmd{Args: []string{"sh", "-c", "id -u; id -g"}, User: "4321:99"}, stdout: "4321\n99\n"},
		{name: "existing user and group", cmd: executor.Cmd{Args: []string{"sh", "-c", "id -u; id -g"}, User: "nobody", Group: "root"}, stdout: "65534\n0\n"},
		{name: "relative dir", cmd: executor.Cmd{Args: []string{"true"}, Dir: "etc"}, code: -1, err: instance.ErrInvalid},
		{name: "empty", cmd: executor.Cmd{}, code: -1, err: instance.ErrInvalid},
		{name: "bad user name", cmd: executor.Cmd{Args: []string{"true"}, User: "Bad User"}, code: -1, err: instance.ErrInvalid},
		{name: "unknown group", cmd: executor.Cmd{Args: []string{"true"}, User: "nobody", Group: "nogroup-here"}, code: -1, err: instance.ErrUser},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			var out, errb bytes.Buffer
			cmd := tc.cmd
			cmd.Stdout, cmd.Stderr = &out, &errb
			code, err := in.Exec(ctxFor(t, time.Minute), cmd)
			if tc.err == nil {
				is.NoErr(err)
			} else {
				is.True(errors.Is(err, tc.err))
				t.Log(err)
			}
			is.Equal(code, tc.code)
			is.Equal(out.String(), tc.stdout)
			is.Equal(errb.String(), tc.stderr)
		})
	}
}

func TestExecSameWriterAndDrain(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	_, m, _ := setup(t, instance.Config{})
	in := launch(t, m, instance.Spec{})
	// One writer for both streams, and more output than any buffer: all of
	// it is there when Exec returns.
	var both bytes.Buffer
	code, err := in.Exec(ctxFor(t, time.Minute), executor.Cmd{
		Args:   []string{"sh", "-c", "i=0; while [ $i -lt 2000 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done"},
		Stdout: &both, Stderr: &both,
	})
	is.NoErr(err)
	is.Equal(code, 0)
	is.Equal(strings.Count(both.String(), "\n"), 4000)
	is.True(strings.Contains(both.String(), "out1999\n"))
	is.True(strings.Contains(both.String(), "err1999\n"))

	// Big stdin through to stdout.
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	var out bytes.Buffer
	code, err = in.Exec(ctxFor(t, time.Minute), executor.Cmd{Args: []string{"cat"}, Stdin: bytes.NewReader(data), Stdout: &out})
	is.NoErr(err)
	is.Equal(code, 0)
	is.True(bytes.Equal(out.Bytes(), data))

	// A background child holding stdout open does not hold Exec.
	out.Reset()
	code, err = in.Exec(ctxFor(t, time.Minute), executor.Cmd{Args: []string{"sh", "-c", "sleep 30 & echo started"}, Stdout: &out})
	is.NoErr(err)
	is.Equal(code, 0)
	is.Equal(out.String(), "started\n")
}

func TestExecTimeoutAndCancel(t *testing.T) {
	t.Parallel()
	_, m, _ := setup(t, instance.Config{KillGrace: 500 * time.Millisecond})
	in := launch(t, m, instance.Spec{})
	t.Run("timeout terminates", func(t *testing.T) {
		is := is.New(t)
		var out bytes.Buffer
		code, err := in.Exec(ctxFor(t, time.Minute), executor.Cmd{
			Args: []string{"sh", "-c", "echo before; exec sleep 60"}, Stdout: &out, Timeout: 300 * time.Millisecond,
		})
		is.True(errors.Is(err, instance.ErrTimeout))
		is.Equal(code, 143) // SIGTERM
		is.Equal(out.String(), "before\n")
	})
	t.Run("ignored TERM is killed", func(t *testing.T) {
		is := is.New(t)
		code, err := in.Exec(ctxFor(t, time.Minute), executor.Cmd{
			Args: []string{"sh", "-c", "trap '' TERM; exec sleep 60"}, Timeout: 300 * time.Millisecond,
		})
		is.True(errors.Is(err, instance.ErrTimeout))
		is.Equal(code, 137) // SIGKILL after the kill grace
	})
	t.Run("context cancelled", func(t *testing.T) {
		is := is.New(t)
		ctx, cancel := context.WithCancel(context.Background())
		pr, pw := io.Pipe()
		go func() {
			// Cancel once the command is surely running.
			b := make([]byte, 6)
			_, _ = io.ReadFull(pr, b)
			cancel()
			_, _ = io.Copy(io.Discard, pr)
		}()
		code, err := in.Exec(ctx, executor.Cmd{Args: []string{"sh", "-c", "echo ready; exec sleep 60"}, Stdout: pw})
		pw.Close()
		is.True(errors.Is(err, context.Canceled))
		is.True(!errors.Is(err, instance.ErrTimeout))
		is.Equal(code, 143)
	})
	t.Run("no process left", func(t *testing.T) {
		is := is.New(t)
		ps := run(t, in, "ps")
		is.True(!strings.Contains(ps, "sleep 60"))
	})
}

func TestExecUserCreatedOnDemand(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	_, m, _ := setup(t, instance.Config{})
	in := launch(t, m, instance.Spec{}) // busybox: no useradd
	ctx := ctxFor(t, time.Minute)
	var out bytes.Buffer
	code, err := in.Exec(ctx, executor.Cmd{
		Args: []string{"sh", "-c", "id -un; id -u; echo $HOME; pwd; touch mine; stat -c '%u %U' mine"},
		User: "_incusexec", Stdout: &out,
	})
	is.NoErr(err)
	is.Equal(code, 0)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	is.Equal(len(lines), 5)
	is.Equal(lines[0], "_incusexec")
	uid, err := strconv.Atoi(lines[1])
	is.NoErr(err)
	is.True(uid >= 1000)
	is.Equal(lines[2], "/home/_incusexec")
	is.Equal(lines[3], "/home/_incusexec")
	is.Equal(lines[4], lines[1]+" _incusexec")

	// Another handle finds the user made before rather than making another.
	again := m.Instance(in.Name())
	out.Reset()
	_, err = again.Exec(ctx, executor.Cmd{Args: []string{"id", "-u"}, User: "_incusexec", Stdout: &out})
	is.NoErr(err)
	is.Equal(strings.TrimSpace(out.String()), lines[1])
	is.Equal(run(t, in, "grep", "-c", "^_incusexec:", "/etc/passwd"), "1")
}

func TestExecUserThatCannotBeCreated(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	_, m, _ := setup(t, instance.Config{})
	in := launch(t, m, instance.Spec{})
	ctx := ctxFor(t, time.Minute)
	// No /etc/passwd to add to: it is a directory.
	run(t, in, "sh", "-c", "rm /etc/passwd && mkdir /etc/passwd")
	_, err := in.Exec(ctx, executor.Cmd{Args: []string{"true"}, User: "builder"})
	is.True(errors.Is(err, instance.ErrUser))
	t.Log(err)

	// A host's own creation hook, failing.
	refused := errors.New("not on this worker")
	_, m2, _ := setup(t, instance.Config{CreateUser: func(context.Context, *instance.Instance, string) error { return refused }})
	in2 := launch(t, m2, instance.Spec{})
	_, err = in2.Exec(ctx, executor.Cmd{Args: []string{"true"}, User: "builder"})
	is.True(errors.Is(err, instance.ErrUser))
	is.True(errors.Is(err, refused))
	t.Log(err)
}

// TestExecStreamedStatusAndStop runs commands on the websocket path
// (Cmd.Stream): statuses, both streams, and stopping on a timeout and on
// ctx's end as the recorded path does.
func TestExecStreamedStatusAndStop(t *testing.T) {
	t.Parallel()
	_, m, _ := setup(t, instance.Config{KillGrace: 500 * time.Millisecond})
	in := launch(t, m, instance.Spec{})
	for _, tc := range []struct {
		name           string
		cmd            executor.Cmd
		code           int
		stdout, stderr string
		err            error
	}{
		{name: "streams apart", cmd: executor.Cmd{Args: []string{"sh", "-c", "echo out; echo err >&2; exit 3"}}, code: 3, stdout: "out\n", stderr: "err\n"},
		{name: "missing command", cmd: executor.Cmd{Args: []string{"no-such-command"}}, code: 127},
		{name: "killed", cmd: executor.Cmd{Args: []string{"sh", "-c", "kill -9 $$"}}, code: 137},
		{name: "env and user", cmd: executor.Cmd{Args: []string{"sh", "-c", "echo $GREETING; id -u; pwd"}, Env: map[string]string{"GREETING": "hi"}, User: "4321", Dir: "/etc"}, stdout: "hi\n4321\n/etc\n"},
		{name: "timeout terminates", cmd: executor.Cmd{Args: []string{"sh", "-c", "echo before; exec sleep 60"}, Timeout: 2 * time.Second}, code: 143, stdout: "before\n", err: instance.ErrTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			var out, errb bytes.Buffer
			cmd := tc.cmd
			cmd.Stdout, cmd.Stderr, cmd.Stream = &out, &errb, true
			code, err := in.Exec(ctxFor(t, time.Minute), cmd)
			if tc.err == nil {
				is.NoErr(err)
			} else {
				is.True(errors.Is(err, tc.err))
			}
			is.Equal(code, tc.code)
			is.Equal(out.String(), tc.stdout)
			is.Equal(errb.String(), tc.stderr)
		})
	}
	// The command says when it is ready, so that the signal cannot come
	// before the trap, however loaded the host.
	for _, tc := range []struct {
		name, script string
		code         int
	}{
		{"context cancelled", "echo ready; exec sleep 60", 143},
		{"ignored TERM is killed", "trap '' TERM; echo ready; exec sleep 60", 137},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			ctx, cancel := context.WithCancel(context.Background())
			pr, pw := io.Pipe()
			go func() {
				b := make([]byte, 6)
				_, _ = io.ReadFull(pr, b)
				cancel()
				_, _ = io.Copy(io.Discard, pr)
			}()
			code, err := in.Exec(ctx, executor.Cmd{Args: []string{"sh", "-c", tc.script}, Stdout: pw, Stream: true})
			pw.Close()
			is.True(errors.Is(err, context.Canceled))
			is.Equal(code, tc.code)
		})
	}
}
