package instance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"github.com/incusexec/incusexec/executor"
	incus "github.com/lxc/incus/v6/client"
	"github.com/lxc/incus/v6/shared/api"
)

// Exec runs cmd and returns its exit status once it has exited and all its
// output has been written. A command killed by a signal reports 128 plus the
// signal number (137 for SIGKILL); a command not found reports 127 and one
// that cannot be executed 126, as shells do.
//
// err is nil when the command ran to its end, whatever its status. On a
// timeout it wraps ErrTimeout, on ctx's end ctx's error (the status is then
// the killed command's, or -1); it wraps ErrExec when the command could not
// be run or its end not seen, ErrNotRunning when the instance is not running,
// and ErrUser when the user cannot be provided (with ErrNotFound too when
// NoCreateUser forbids creating it).
func (in *Instance) Exec(ctx context.Context, cmd executor.Cmd) (int, error) {
	if len(cmd.Args) == 0 || cmd.Args[0] == "" {
		return -1, fmt.Errorf("%w: instance %s: exec: empty command", ErrInvalid, in.name)
	}
	if cmd.Dir != "" {
		if _, err := cleanAbs(cmd.Dir, "working directory"); err != nil {
			return -1, err
		}
	}
	if cmd.Timeout < 0 || cmd.KillGrace < 0 {
		return -1, fmt.Errorf("%w: negative timeout or kill grace", ErrInvalid)
	}
	for k, v := range cmd.Env {
		// "A=B" would set A, not "A=B"; NUL cuts the C strings short.
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return -1, fmt.Errorf("%w: instance %s: exec: environment variable %q: empty name, or '=' or NUL in it", ErrInvalid, in.name, k)
		}
	}
	acct, err := in.account(ctx, cmd.User, cmd.Group, !cmd.NoCreateUser)
	if err != nil {
		return -1, err
	}
	env := maps.Clone(cmd.Env)
	if env == nil {
		env = map[string]string{}
	}
	if acct.uid != 0 {
		setDefault(env, "HOME", acct.home)
		setDefault(env, "USER", acct.name)
		setDefault(env, "LOGNAME", acct.name)
	}
	dir := cmd.Dir
	if dir == "" && acct.uid != 0 {
		dir = acct.home
	}
	killGrace := cmd.KillGrace
	if killGrace == 0 {
		killGrace = in.m.cfg.KillGrace
	}
	return in.exec(ctx, api.InstanceExecPost{
		Command:     cmd.Args,
		WaitForWS:   true, // the recorded path turns it off
		Environment: env,
		User:        acct.uid,
		Group:       acct.gid,
		Cwd:         dir,
	}, cmd, killGrace)
}

// exec runs req on the recorded path when it can, else on websockets.
func (in *Instance) exec(ctx context.Context, req api.InstanceExecPost, cmd executor.Cmd, killGrace time.Duration) (int, error) {
	raw, ok := in.m.c.(rawAPI)
	if cmd.Stream || !ok || !raw.HasExtension("container_exec_recording") {
		return in.execStream(ctx, req, cmd, killGrace)
	}
	code, err := in.execRecorded(ctx, raw, req, cmd, killGrace)
	if errors.Is(err, errNoWrapper) {
		in.m.log.Debug("exec: no "+wrapperShell+", output on websockets", "name", in.name)
		return in.execStream(ctx, req, cmd, killGrace)
	}
	return code, err
}

func setDefault(env map[string]string, k, v string) {
	if _, ok := env[k]; !ok && v != "" {
		env[k] = v
	}
}

// execStream runs req with its streams on websockets (Cmd.Stream).
func (in *Instance) execStream(ctx context.Context, req api.InstanceExecPost, cmd executor.Cmd, killGrace time.Duration) (int, error) {
	runCtx, cancel := execContext(ctx, cmd.Timeout)
	defer cancel()
	stdout, stderr := outputs(cmd.Stdout, cmd.Stderr)
	ctl := make(chan *websocket.Conn, 1)
	dataDone := make(chan bool)
	args := &incus.InstanceExecArgs{
		Stdin:    cmd.Stdin,
		Stdout:   stdout,
		Stderr:   stderr,
		DataDone: dataDone,
		Control:  func(c *websocket.Conn) { ctl <- c },
	}
	if args.Stdin == nil {
		args.Stdin = eofReader{}
	}
	// Not bound to ctx: a bound copy of the client would open an event
	// connection of its own for every operation; ctx is honoured by
	// signalling the command instead.
	op, err := in.m.c.ExecInstance(in.name, req, args)
	if err != nil {
		return -1, in.execStartErr(err, req.Command[0])
	}
	waited := make(chan error, 1)
	go func() { waited <- op.WaitContext(context.Background()) }()

	var conn *websocket.Conn
	signal := func(sig syscall.Signal) {
		if conn == nil {
			select {
			case conn = <-ctl:
			case <-time.After(time.Second):
				in.m.log.Warn("exec: no control connection to signal through", "name", in.name)
				return
			}
		}
		msg := api.InstanceExecControl{Command: "signal", Signal: int(sig)}
		if err := conn.WriteJSON(msg); err != nil {
			in.m.log.Debug("exec: cannot send signal", "name", in.name, "signal", sig, "err", err)
		}
	}
	var (
		opErr    error
		finished bool
		stopErr  error
	)
	select {
	case opErr = <-waited:
		finished = true
	case <-runCtx.Done():
		stopErr = context.Cause(runCtx)
		in.m.log.Info("exec: stopping command", "name", in.name, "cmd", req.Command[0], "cause", stopErr)
		signal(syscall.SIGTERM)
		select {
		case opErr = <-waited:
			finished = true
		case <-time.After(killGrace):
			signal(syscall.SIGKILL)
			select {
			case opErr = <-waited:
				finished = true
			case <-time.After(killGrace + 5*time.Second):
			}
		}
	}
	defer func() {
		select {
		case c := <-ctl:
			conn = c
		default:
		}
		if conn != nil {
			_ = conn.Close()
		}
	}()
	if !finished {
		_ = op.Cancel()
		return -1, fmt.Errorf("%w: instance %s: %s did not end after SIGKILL: %w", ErrExec, in.name, req.Command[0], stopErr)
	}
	// The output streams end after the process; wait for them so that
	// everything written reaches the caller's writers.
	drain := time.NewTimer(30 * time.Second)
	defer drain.Stop()
	select {
	case <-dataDone:
	case <-drain.C:
		in.m.log.Warn("exec: output did not end 30s after the command", "name", in.name, "cmd", req.Command[0])
	}
	code := -1
	if opErr == nil {
		code = exitCode(op.Get().Metadata)
	}
	return in.execResult(req.Command[0], code, opErr, stopErr)
}

// execResult maps how an exec operation ended onto Exec's results.
func (in *Instance) execResult(name string, code int, opErr, stopErr error) (int, error) {
	switch {
	case stopErr != nil:
		return code, fmt.Errorf("instance %s: %s: %w", in.name, name, stopErr)
	case opErr != nil && containsFold(opErr.Error(), "command not found"):
		// Incus turns every exit status 127 into this error, whether the
		// executable is missing or a shell exited so: report the status.
		return 127, nil
	case opErr != nil && containsFold(opErr.Error(), "command not executable"):
		return 126, nil
	case opErr != nil:
		err := wrapErr(opErr, in.name, "exec "+name)
		if !errors.Is(err, ErrNotRunning) {
			err = fmt.Errorf("%w: %w", ErrExec, err)
		}
		return code, err
	case code < 0:
		return code, fmt.Errorf("%w: instance %s: %s: no exit status", ErrExec, in.name, name)
	}
	return code, nil
}

func exitCode(md map[string]any) int {
	switch v := md["return"].(type) {
	case float64:
		return int(v)
	case int:
		return v
	case int64:
		return int(v)
	}
	return -1
}

// outputs wraps the caller's writers: one lock serialises them when they are
// the same writer (the client copies both streams concurrently), and the
// wrapper hides io.ReaderFrom so that copies go through Write.
func outputs(stdout, stderr io.Writer) (io.Writer, io.Writer) {
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	mu := &sync.Mutex{}
	o := &lockedWriter{w: stdout, mu: mu}
	e := &lockedWriter{w: stderr, mu: &sync.Mutex{}}
	if stdout == stderr {
		e.mu = mu
	}
	return o, e
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }
