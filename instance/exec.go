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
	if err := in.checkCmd(cmd); err != nil {
		return -1, err
	}
	req, err := in.execRequest(ctx, cmd)
	if err != nil {
		return -1, err
	}
	return in.exec(ctx, req, cmd, in.killGrace(cmd))
}

// checkCmd refuses what no instance could run, before anything is asked of
// the server.
func (in *Instance) checkCmd(cmd executor.Cmd) error {
	if len(cmd.Args) == 0 || cmd.Args[0] == "" {
		return fmt.Errorf("%w: instance %s: exec: empty command", ErrInvalid, in.name)
	}
	if cmd.Dir != "" {
		if _, err := cleanAbs(cmd.Dir, "working directory"); err != nil {
			return err
		}
	}
	if cmd.Timeout < 0 || cmd.KillGrace < 0 {
		return fmt.Errorf("%w: negative timeout or kill grace", ErrInvalid)
	}
	for k, v := range cmd.Env {
		// "A=B" would set A, not "A=B"; NUL cuts the C strings short.
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return fmt.Errorf("%w: instance %s: exec: environment variable %q: empty name, or '=' or NUL in it", ErrInvalid, in.name, k)
		}
	}
	return nil
}

// execRequest resolves cmd's user (creating it unless NoCreateUser) and
// makes the request that runs cmd as that user: in the user's home, with
// HOME, USER and LOGNAME set for a user other than root.
func (in *Instance) execRequest(ctx context.Context, cmd executor.Cmd) (api.InstanceExecPost, error) {
	acct, err := in.account(ctx, cmd.User, cmd.Group, !cmd.NoCreateUser)
	if err != nil {
		return api.InstanceExecPost{}, err
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
	return api.InstanceExecPost{
		Command:     cmd.Args,
		WaitForWS:   true, // the recorded path turns it off
		Environment: env,
		User:        acct.uid,
		Group:       acct.gid,
		Cwd:         dir,
	}, nil
}

// killGrace is how long a stopped command has between SIGTERM and SIGKILL.
func (in *Instance) killGrace(cmd executor.Cmd) time.Duration {
	if cmd.KillGrace != 0 {
		return cmd.KillGrace
	}
	return in.m.cfg.KillGrace
}

// exec runs req with its output through the instance's output directory
// when it has one, else on the recorded path when it can, else on
// websockets.
func (in *Instance) exec(ctx context.Context, req api.InstanceExecPost, cmd executor.Cmd, killGrace time.Duration) (int, error) {
	raw, ok := in.m.c.(rawAPI)
	if cmd.Stream || !ok {
		return in.execStream(ctx, req, cmd, killGrace)
	}
	dir := in.outputDir()
	if dir == nil && !raw.HasExtension("container_exec_recording") {
		return in.execStream(ctx, req, cmd, killGrace)
	}
	code, err := in.execRecorded(ctx, raw, req, cmd, killGrace, dir)
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
	s, err := in.startStream(req, cmd)
	if err != nil {
		return -1, err
	}
	defer s.closeControl()
	finished, opErr, stopErr := s.waitOrStop(runCtx, killGrace)
	if !finished {
		_ = s.op.Cancel()
		return -1, fmt.Errorf("%w: instance %s: %s did not end after SIGKILL: %w", ErrExec, in.name, s.name, stopErr)
	}
	s.drainOutput()
	code := -1
	if opErr == nil {
		code = exitCode(s.op.Get().Metadata)
	}
	return in.execResult(s.name, code, opErr, stopErr)
}

// streamed is a command running with its streams on websockets.
type streamed struct {
	in       *Instance
	name     string // the command's, for messages
	op       incus.Operation
	waited   chan error           // how op ended, once it has
	ctl      chan *websocket.Conn // the control connection, once open
	conn     *websocket.Conn      // the control connection, once taken from ctl
	dataDone chan bool            // closed when the output streams have ended
}

// startStream starts req with cmd's streams on websockets, and waits for
// its end on a goroutine of its own.
func (in *Instance) startStream(req api.InstanceExecPost, cmd executor.Cmd) (*streamed, error) {
	s := &streamed{
		in:       in,
		name:     req.Command[0],
		waited:   make(chan error, 1),
		ctl:      make(chan *websocket.Conn, 1),
		dataDone: make(chan bool),
	}
	stdout, stderr := outputs(cmd.Stdout, cmd.Stderr)
	args := &incus.InstanceExecArgs{
		Stdin:    cmd.Stdin,
		Stdout:   stdout,
		Stderr:   stderr,
		DataDone: s.dataDone,
		Control:  func(c *websocket.Conn) { s.ctl <- c },
	}
	if args.Stdin == nil {
		args.Stdin = eofReader{}
	}
	// Not bound to ctx: a bound copy of the client would open an event
	// connection of its own for every operation; ctx is honoured by
	// signalling the command instead.
	op, err := in.m.c.ExecInstance(in.name, req, args)
	if err != nil {
		return nil, in.execStartErr(err, s.name)
	}
	s.op = op
	go func() { s.waited <- op.WaitContext(context.Background()) }()
	return s, nil
}

// waitOrStop waits for the command to end; when ctx ends first it sends
// SIGTERM, then SIGKILL after killGrace. finished is false when the command
// outlived SIGKILL by killGrace and five seconds more; stopErr is ctx's
// cause when ctx ended.
func (s *streamed) waitOrStop(ctx context.Context, killGrace time.Duration) (finished bool, opErr, stopErr error) {
	select {
	case opErr = <-s.waited:
		return true, opErr, nil
	case <-ctx.Done():
	}
	stopErr = context.Cause(ctx)
	s.in.m.log.Info("exec: stopping command", "name", s.in.name, "cmd", s.name, "cause", stopErr)
	s.signal(syscall.SIGTERM)
	select {
	case opErr = <-s.waited:
		return true, opErr, stopErr
	case <-time.After(killGrace):
	}
	s.signal(syscall.SIGKILL)
	select {
	case opErr = <-s.waited:
		return true, opErr, stopErr
	case <-time.After(killGrace + 5*time.Second):
		return false, nil, stopErr
	}
}

// signal sends sig to the command through the control connection, waiting
// up to a second for the connection to open.
func (s *streamed) signal(sig syscall.Signal) {
	if s.conn == nil {
		select {
		case s.conn = <-s.ctl:
		case <-time.After(time.Second):
			s.in.m.log.Warn("exec: no control connection to signal through", "name", s.in.name)
			return
		}
	}
	msg := api.InstanceExecControl{Command: "signal", Signal: int(sig)}
	if err := s.conn.WriteJSON(msg); err != nil {
		s.in.m.log.Debug("exec: cannot send signal", "name", s.in.name, "signal", sig, "err", err)
	}
}

// drainOutput waits for the output streams, which end after the process,
// so that everything written reaches the caller's writers.
func (s *streamed) drainOutput() {
	drain := time.NewTimer(30 * time.Second)
	defer drain.Stop()
	select {
	case <-s.dataDone:
	case <-drain.C:
		s.in.m.log.Warn("exec: output did not end 30s after the command", "name", s.in.name, "cmd", s.name)
	}
}

// closeControl closes the control connection, if it opened.
func (s *streamed) closeControl() {
	select {
	case c := <-s.ctl:
		s.conn = c
	default:
	}
	if s.conn != nil {
		_ = s.conn.Close()
	}
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
