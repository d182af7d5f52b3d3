package instance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/lxc/incus/v6/shared/api"
)

// pidMarker starts the line the wrapper writes to stderr before the command
// replaces it; Exec removes the line. It gives the command's pid, through
// which a recorded exec (which has no control websocket) is signalled.
const pidMarker = "incusexec-exec-pid "

// wrapperShell is what runs the wrapper; an instance without it gets the
// websocket path.
const wrapperShell = "/bin/sh"

// wrapperScript writes the marker, then replaces itself by the command. The
// checks reproduce incusd's own silent 127 and 126 for a missing or
// non-executable command, which the shell would otherwise comment on.
const wrapperScript = `printf '` + pidMarker + `%d\n' "$$" >&2
` + wrapperExec

const wrapperExec = `case $1 in
*/*) [ -e "$1" ] || exit 127; [ -f "$1" ] && [ -x "$1" ] || exit 126 ;;
*) command -v -- "$1" >/dev/null 2>&1 || exit 127 ;;
esac
exec "$@"`

// followEvery bounds how stale followed output can be while a recorded
// command runs: the files are read this often (sooner at first).
const followEvery = time.Second

// errNoWrapper says the wrapper shell could not run: nothing ran, so the
// websocket path may run the command instead.
var errNoWrapper = errors.New("no " + wrapperShell + " in the instance")

// recording is one recorded exec's output files on the server, or in an
// output directory.
type recording struct {
	srv    *rawServer
	base   string // API path of the files, without the suffix
	local  string // or: their path on this host, without the suffix (an output directory)
	stdout *follower
	stderr *follower
}

// execRecorded runs req with its output recorded in files: the server's
// (dir nil) or those of an output directory.
func (in *Instance) execRecorded(ctx context.Context, raw rawAPI, req api.InstanceExecPost, cmd executor.Cmd, killGrace time.Duration, dir *OutputDir) (int, error) {
	runCtx, cancel := execContext(ctx, cmd.Timeout)
	defer cancel()
	name := req.Command[0]
	req, fifo := recordedRequest(req, cmd.Stdin != nil)
	srv, err := newRawServer(raw)
	if err != nil {
		return -1, fmt.Errorf("%w: instance %s: exec %s: %w", ErrExec, in.name, name, err)
	}
	var shared sharedFiles
	if dir != nil {
		if shared, err = newSharedFiles(dir); err != nil {
			return -1, fmt.Errorf("%w: instance %s: exec %s: %w", ErrExec, in.name, name, err)
		}
		req = sharedRequest(req, shared)
	}
	id, err := srv.startExec(in.name, req)
	if err != nil {
		shared.remove()
		return -1, in.execStartErr(err, name)
	}
	stdout, stderr := outputs(cmd.Stdout, cmd.Stderr)
	rec := in.newRecording(srv, id, stdout, stderr)
	rec.local = shared.host
	// The files go once the output is delivered, behind the caller's
	// back: a removal costs two requests the caller need not wait for
	// (Manager.Close waits; GC collects what a killed process left).
	// Small output of a command that ended may stay with the instance
	// (Config.KeepExecOutputUpTo). An output directory's files cost
	// nothing to remove.
	keep := false
	defer func() {
		switch {
		case dir != nil:
			shared.remove()
		case !keep:
			in.m.later(func() { rec.remove(in) })
		}
	}()
	w, stopWaiting := srv.awaitOp(id)
	defer stopWaiting()

	finished, stopErr := in.runRecorded(runCtx, req, rec, w, fifo, cmd.Stdin, killGrace)
	if !finished {
		return -1, fmt.Errorf("%w: instance %s: %s did not end after SIGKILL: %w", ErrExec, in.name, name, stopErr)
	}
	if err := rec.readToEnd(); err != nil {
		if stopErr != nil {
			in.m.log.Warn("exec: end of recorded output", "name", in.name, "err", err)
		} else {
			return -1, fmt.Errorf("%w: instance %s: exec %s: output: %w", ErrExec, in.name, name, err)
		}
	}
	code, err := in.recordedResult(name, rec, w.res, stopErr)
	if err == nil && dir != nil && !rec.stderr.sawMarker && rec.stdout.off == 0 && rec.stderr.off == 0 {
		// The wrapper writes its pid line before anything runs: nothing
		// written, nothing run (a missing shell is errNoWrapper above).
		return -1, fmt.Errorf("%w: instance %s: exec %s: %w: %s, %s on this host: %w", ErrExec, in.name, name, ErrOutputDir, dir.Guest, dir.Host, errNotShared)
	}
	keep = err == nil && in.m.cfg.KeepExecOutputUpTo > 0 && rec.size() <= in.m.cfg.KeepExecOutputUpTo
	return code, err
}

// size is how many bytes the two files held, as read.
func (rec *recording) size() int64 { return rec.stdout.off + rec.stderr.off }

// recordedRequest turns req into the recorded exec of its command: the
// command runs under the wrapper, which writes its pid line and, when the
// command has a stdin, reads it from a FIFO whose path is returned.
func recordedRequest(req api.InstanceExecPost, stdin bool) (api.InstanceExecPost, string) {
	fifo := ""
	if stdin {
		fifo = stdinFIFO()
		req.Command = append([]string{wrapperShell, "-c", stdinWrapperScript, "sh", fifo}, req.Command...)
	} else {
		req.Command = append([]string{wrapperShell, "-c", wrapperScript, "sh"}, req.Command...)
	}
	req.WaitForWS, req.Interactive, req.RecordOutput = false, false, true
	return req, fifo
}

// awaitOp waits for operation id on a goroutine of its own, until it ends
// or stop is called.
func (s *rawServer) awaitOp(id string) (w *opWaiter, stop func()) {
	ctx, stop := context.WithCancel(context.Background())
	w = &opWaiter{ch: make(chan opResult, 1)}
	go func() {
		op, err := s.waitOp(ctx, id)
		w.ch <- opResult{op, err}
	}()
	return w, stop
}

// runRecorded follows the recorded command's output until it ends (see
// followUntilEnd), feeding stdin through fifo when there is one.
func (in *Instance) runRecorded(ctx context.Context, req api.InstanceExecPost, rec *recording, w *opWaiter, fifo string, stdin io.Reader, killGrace time.Duration) (finished bool, stopErr error) {
	var feed *feeder
	if fifo != "" && in.awaitPID(ctx, rec, w) {
		feed = in.startFeeder(req, fifo, stdin)
	}
	finished, stopErr = in.followUntilEnd(ctx, rec, w, killGrace)
	if feed != nil {
		feed.finish(in, rec.srv, stopErr != nil || !finished)
	}
	return finished, stopErr
}

// recordedResult maps how a recorded exec ended onto Exec's results, or
// onto errNoWrapper when the wrapper itself could not run.
func (in *Instance) recordedResult(name string, rec *recording, res opResult, stopErr error) (int, error) {
	code, opErr := -1, res.err
	if res.op != nil {
		code = exitCode(res.op.Metadata)
	}
	if stopErr == nil && !rec.stderr.sawMarker && rec.stdout.off == 0 && rec.stderr.off == 0 &&
		(code == 127 || code == noFIFO || (opErr != nil && containsFold(opErr.Error(), "command not found"))) {
		return -1, errNoWrapper
	}
	if opErr == nil && code < 0 {
		opErr = errors.New("no exit status")
	}
	return in.execResult(name, code, opErr, stopErr)
}

// opWaiter holds how the awaited operation ended, once it has.
type opWaiter struct {
	ch   chan opResult
	res  opResult
	done bool
}

// wait returns whether the operation has ended, waiting for it until
// timeout (nil: not at all).
func (w *opWaiter) wait(timeout <-chan time.Time) bool {
	if w.done {
		return true
	}
	if timeout == nil {
		select {
		case w.res = <-w.ch:
			w.done = true
		default:
		}
		return w.done
	}
	select {
	case w.res = <-w.ch:
		w.done = true
	case <-timeout:
	}
	return w.done
}

// execContext bounds ctx by timeout (when positive), with ErrTimeout as the
// cause.
func execContext(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	if timeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeoutCause(ctx, timeout, fmt.Errorf("%w after %s", ErrTimeout, timeout))
}

func (in *Instance) execStartErr(err error, name string) error {
	err = wrapErr(err, in.name, "exec "+name)
	if !errors.Is(err, ErrNotRunning) && !errors.Is(err, ErrNotFound) {
		err = fmt.Errorf("%w: %w", ErrExec, err)
	}
	return err
}

// opResult is how an awaited operation ended.
type opResult struct {
	op  *api.Operation
	err error
}

func (in *Instance) newRecording(srv *rawServer, opID string, stdout, stderr io.Writer) *recording {
	rec := &recording{
		srv:  srv,
		base: "/1.0/instances/" + url.PathEscape(in.name) + "/logs/exec-output/exec_" + url.PathEscape(opID),
	}
	rec.stdout = &follower{rec: rec, suffix: ".stdout", w: stdout}
	rec.stderr = &follower{rec: rec, suffix: ".stderr", w: stderr, header: true}
	return rec
}

// followUntilEnd copies new output to the writers until the operation ends;
// when ctx ends first it stops the command as the websocket path does
// (SIGTERM, SIGKILL after killGrace).
func (in *Instance) followUntilEnd(ctx context.Context, rec *recording, w *opWaiter, killGrace time.Duration) (finished bool, stopErr error) {
	if w.wait(nil) {
		return true, nil
	}
	wait := 100 * time.Millisecond
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case w.res = <-w.ch:
			w.done = true
			return true, nil
		case <-ctx.Done():
			stopErr = context.Cause(ctx)
			return in.stopRecorded(rec, w, killGrace, stopErr), stopErr
		case <-timer.C:
			rec.follow(in)
			wait = min(2*wait, followEvery)
			timer.Reset(wait)
		}
	}
}

func (in *Instance) stopRecorded(rec *recording, w *opWaiter, killGrace time.Duration, cause error) bool {
	in.m.log.Info("exec: stopping command", "name", in.name, "cause", cause)
	// A signal that could not be sent (no pid, or the daemon starts no exec:
	// one shutting down refuses) has nothing to wait for: waiting out the
	// grace periods would only keep the caller past its deadline.
	if in.signalRecorded(rec, syscall.SIGTERM) && w.wait(time.After(killGrace)) {
		return true
	}
	if !in.signalRecorded(rec, syscall.SIGKILL) {
		return w.wait(nil)
	}
	return w.wait(time.After(killGrace + 5*time.Second))
}

// signalRecorded sends sig to the command through a second exec, by the pid
// the wrapper wrote (waiting up to a second for it), and reports whether the
// signal was sent.
func (in *Instance) signalRecorded(rec *recording, sig syscall.Signal) bool {
	deadline := time.Now().Add(time.Second)
	for rec.stderr.pid == 0 && time.Now().Before(deadline) {
		rec.follow(in)
		if rec.stderr.pid == 0 {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if rec.stderr.pid == 0 {
		in.m.log.Warn("exec: no pid to signal", "name", in.name)
		return false
	}
	req := api.InstanceExecPost{
		Command:     []string{wrapperShell, "-c", `kill -s "$1" "$2"`, "sh", signalName(sig), fmt.Sprint(rec.stderr.pid)},
		Environment: map[string]string{},
	}
	id, err := rec.srv.startExec(in.name, req)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = rec.srv.waitOp(ctx, id)
		cancel()
	}
	if err != nil {
		in.m.log.Debug("exec: cannot send signal", "name", in.name, "signal", sig, "err", err)
		return false
	}
	return true
}

func signalName(sig syscall.Signal) string {
	if sig == syscall.SIGKILL {
		return "KILL"
	}
	return "TERM"
}

// follow copies what both files gained since the last call; errors wait for
// the next call (readToEnd reports them).
func (rec *recording) follow(in *Instance) {
	for _, f := range []*follower{rec.stdout, rec.stderr} {
		if _, err := f.pull(); err != nil {
			in.m.log.Debug("exec: following output", "name", in.name, "file", f.suffix, "err", err)
		}
	}
}

// readToEnd copies the rest of both files once the command has ended.
func (rec *recording) readToEnd() error {
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, f := range []*follower{rec.stdout, rec.stderr} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.final = true
			for try := range 3 {
				if _, errs[i] = f.pull(); errs[i] == nil {
					break
				}
				time.Sleep(time.Duration(try+1) * 100 * time.Millisecond)
			}
			if errs[i] == nil {
				errs[i] = f.flush()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// remove deletes both files, whatever happened before; a file already gone
// is fine.
func (rec *recording) remove(in *Instance) {
	var wg sync.WaitGroup
	for _, f := range []*follower{rec.stdout, rec.stderr} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, err := rec.srv.raw.RawQuery(http.MethodDelete, f.path(), nil, "")
			if err != nil && !api.StatusErrorCheck(err, http.StatusNotFound) {
				in.m.log.Warn("exec: cannot delete recorded output", "name", in.name, "file", f.suffix, "err", err)
			}
		}()
	}
	wg.Wait()
}

// follower copies one growing file to a writer, by Range requests from
// where it stopped.
type follower struct {
	rec    *recording
	suffix string
	w      io.Writer
	off    int64 // bytes of the file consumed
	final  bool  // the command has ended: the file must be there
	werr   error // the writer's first error: later output is dropped

	header    bool   // the file starts with the wrapper's pid line
	held      []byte // start of the file while the header is incomplete
	sawMarker bool
	pid       int
}

// path is the file's API path, with the project.
func (f *follower) path() string { return f.rec.srv.path(f.rec.base + f.suffix) }

func (f *follower) url() string { return f.rec.srv.url + f.path() }

// pull copies the bytes the file has beyond f.off. A file not there yet
// (the operation creates it when it starts) has nothing new.
func (f *follower) pull() (int64, error) {
	if f.rec.local != "" {
		return f.pullLocal()
	}
	req, err := http.NewRequest(http.MethodGet, f.url(), nil)
	if err != nil {
		return 0, err
	}
	if f.off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", f.off))
	}
	resp, err := f.rec.srv.raw.DoHTTP(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusPartialContent:
	case http.StatusOK:
		// A server that ignores Range sends it all: skip what was read.
		if _, err := io.CopyN(io.Discard, resp.Body, f.off); err != nil {
			return 0, fmt.Errorf("%s: shorter than the %d bytes already read: %w", f.suffix, f.off, err)
		}
	case http.StatusRequestedRangeNotSatisfiable:
		return 0, nil
	case http.StatusNotFound:
		if f.final {
			// An ephemeral instance that stopped itself takes its files along.
			return 0, fmt.Errorf("%s: gone before it was read to its end (%d bytes read)", f.suffix, f.off)
		}
		return 0, nil
	default:
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return 0, fmt.Errorf("%s: %s: %s", f.suffix, resp.Status, strings.TrimSpace(string(body)))
	}
	n, err := io.Copy(writerFunc(f.consume), resp.Body)
	return n, err
}

// pullLocal is pull from an output directory's file on this host, which
// Exec made and the instance cannot replace (see OutputDir); it is
// opened as if it could all the same: not through a symbolic link, not
// as a terminal, not blocking on a FIFO, and read only if regular. A pull
// reads no further than the file's size when it starts, and while the
// command runs at most maxPull, so that a command writing without end
// neither keeps it reading nor its caller from stopping the command.
func (f *follower) pullLocal() (int64, error) {
	file, err := os.OpenFile(f.rec.local+f.suffix, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if errors.Is(err, syscall.ELOOP) {
		return 0, fmt.Errorf("%s: %w: a symbolic link", f.suffix, errNotRegular)
	}
	if err != nil {
		return 0, err
	}
	defer file.Close()
	fi, err := file.Stat()
	if err != nil {
		return 0, err
	}
	if !fi.Mode().IsRegular() {
		return 0, fmt.Errorf("%s: %w: %s", f.suffix, errNotRegular, fi.Mode().Type())
	}
	n := fi.Size() - f.off
	if !f.final {
		n = min(n, maxPull)
	}
	if n <= 0 {
		return 0, nil
	}
	if _, err := file.Seek(f.off, io.SeekStart); err != nil {
		return 0, err
	}
	got, err := io.CopyN(writerFunc(f.consume), file, n)
	if errors.Is(err, io.EOF) {
		err = nil // the command truncated it meanwhile
	}
	return got, err
}

// maxPull bounds one read of an output directory's file while its
// command runs.
const maxPull = 16 << 20

// errNotRegular: an output directory's file was replaced by something
// else; nothing is read from it.
var errNotRegular = errors.New("not a regular file")

// consume takes the file's next bytes: the pid line is held back and
// parsed, the rest goes to the writer.
func (f *follower) consume(p []byte) (int, error) {
	f.off += int64(len(p))
	if f.header {
		f.held = append(f.held, p...)
		i := strings.IndexByte(string(f.held), '\n')
		if i < 0 && len(f.held) < len(pidMarker)+24 {
			return len(p), nil
		}
		f.header = false
		rest := f.held
		if i >= 0 && strings.HasPrefix(string(f.held[:i]), pidMarker) {
			if _, err := fmt.Sscanf(string(f.held[len(pidMarker):i]), "%d", &f.pid); err == nil {
				f.sawMarker = true
				rest = f.held[i+1:]
			}
		}
		f.held = nil
		f.write(rest)
		return len(p), nil
	}
	f.write(p)
	return len(p), nil
}

// flush passes on a held start of file that never became a full pid line.
func (f *follower) flush() error {
	if f.header {
		f.header = false
		f.write(f.held)
		f.held = nil
	}
	return f.werr
}

func (f *follower) write(p []byte) {
	if f.werr != nil || len(p) == 0 {
		return
	}
	_, f.werr = f.w.Write(p)
}

type writerFunc func([]byte) (int, error)

func (w writerFunc) Write(p []byte) (int, error) { return w(p) }
