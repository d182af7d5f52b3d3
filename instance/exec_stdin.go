package instance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/lxc/incus/v6/shared/api"
)

// A recorded exec has no stdin of its own: incusd gives the command
// /dev/null. Stdin reaches it through a FIFO in the instance instead. The
// command's wrapper creates the FIFO (as the command's user, so that
// fs.protected_fifos lets the same user open it), writes its pid line,
// and opens the FIFO, which blocks until a second exec, the feeder, opens
// it for writing: `cat` with the caller's Stdin on a websocket. Input on a
// websocket is not subject to incusd's output race, and output is still
// recorded.

// noFIFO is the wrapper's status when it cannot create the FIFO (no
// writable /tmp, no mkfifo): nothing ran, the websocket path may.
const noFIFO = 125

// stdinWrapperScript takes the FIFO's path first, then the command.
const stdinWrapperScript = `f=$1; shift
mkfifo -m 600 "$f" 2>/dev/null || exit 125
printf '` + pidMarker + `%d\n' "$$" >&2
exec <"$f"
rm -f "$f"
` + wrapperExec

// feederScript copies its stdin into the FIFO $1.
const feederScript = `exec cat >"$1"`

func stdinFIFO() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "/tmp/.incusexec-stdin-" + hex.EncodeToString(b)
}

// awaitPID follows the output until the wrapper's pid line has come (the
// FIFO then exists); false when the command or ctx ended first.
func (in *Instance) awaitPID(ctx context.Context, rec *recording, w *opWaiter) bool {
	for rec.stderr.pid == 0 {
		if _, err := rec.stderr.pull(); err != nil {
			in.m.log.Debug("exec: awaiting pid", "name", in.name, "err", err)
		}
		if rec.stderr.pid != 0 || !rec.stderr.header {
			break
		}
		if w.wait(nil) || ctx.Err() != nil {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return rec.stderr.pid != 0
}

// feeder is the exec that copies Stdin into the FIFO.
type feeder struct {
	fifo   string
	cancel context.CancelFunc
	done   chan struct{}
}

func (in *Instance) startFeeder(cmdReq api.InstanceExecPost, fifo string, stdin io.Reader) *feeder {
	ctx, cancel := context.WithCancel(context.Background())
	f := &feeder{fifo: fifo, cancel: cancel, done: make(chan struct{})}
	req := api.InstanceExecPost{
		Command:     []string{wrapperShell, "-c", feederScript, "sh", fifo},
		WaitForWS:   true,
		Environment: map[string]string{},
		User:        cmdReq.User,
		Group:       cmdReq.Group,
	}
	go func() {
		defer close(f.done)
		code, err := in.execStream(ctx, req, executor.Cmd{Stdin: stdin}, 200*time.Millisecond)
		if err != nil || code != 0 {
			in.m.log.Debug("exec: stdin feeder", "name", in.name, "status", code, "err", err)
		}
	}()
	return f
}

// finish ends the feeder once the command has ended: it stops by itself
// when Stdin ends or the command closed the FIFO; otherwise (a Stdin that
// goes on) it is killed. The FIFO is removed when the command may not have
// got to remove it.
func (f *feeder) finish(in *Instance, srv *rawServer, stopped bool) {
	select {
	case <-f.done:
	case <-time.After(2 * time.Second):
		f.cancel()
		<-f.done
		stopped = true
	}
	f.cancel()
	if !stopped {
		return
	}
	req := api.InstanceExecPost{Command: []string{"rm", "-f", f.fifo}, Environment: map[string]string{}}
	id, err := srv.startExec(in.name, req)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = srv.waitOp(ctx, id)
		cancel()
	}
	if err != nil {
		in.m.log.Debug("exec: removing stdin FIFO", "name", in.name, "fifo", f.fifo, "err", err)
	}
}
