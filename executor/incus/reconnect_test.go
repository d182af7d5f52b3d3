package incus_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/incusexec/incusexec/executor/incus"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/matryer/is"
)

// reconnectLimit is Config.Reconnect in the test; -1 shows that the test
// fails without reconnection.
var reconnectLimit = time.Minute

func TestReconnectAfterDaemonRestart(t *testing.T) {
	is := is.New(t)
	d := incustest.Private(t, incustest.Options{})
	d.BusyboxImage(t)
	t.Cleanup(func() { waitNoPorts(t, d.Network) })
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	b, err := incus.NewBackend(ctx, incus.Config{Socket: d.Socket, Owner: "reconnect", Reconnect: reconnectLimit, AllowedRoots: []string{os.TempDir()}})
	is.NoErr(err)
	defer b.Close()
	ex, err := b.Executor(incus.Image{Alias: incustest.BusyboxAlias})
	is.NoErr(err)
	in, err := ex.Create(ctx, executor.Spec{})
	is.NoErr(err)
	defer in.Delete(context.WithoutCancel(ctx))
	is.NoErr(in.Start(ctx))
	r, err := executor.Output(ctx, in, executor.Cmd{Args: []string{"echo", "before"}})
	is.NoErr(err)
	is.Equal(string(r.Stdout), "before\n")

	// Calls made while the daemon is down wait for it to come back.
	restarted := make(chan struct{})
	polled := make(chan error, 1)
	go func() {
		var n int
		defer func() { t.Logf("%d calls during the restart", n) }()
		for {
			select {
			case <-restarted:
				polled <- nil
				return
			default:
			}
			n++
			if _, err := in.IsStarted(ctx); err != nil {
				polled <- err
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	is.NoErr(d.Restart(ctx))
	close(restarted)
	is.NoErr(<-polled) // a call during the restart failed

	// The same backend, executor and instance handle go on working.
	r, err = executor.Output(ctx, in, executor.Cmd{Args: []string{"echo", "after"}})
	is.NoErr(err)
	is.Equal(string(r.Stdout), "after\n")
	started, err := in.IsStarted(ctx)
	is.NoErr(err)
	is.True(started) // instances survive a daemon restart
	// A new instance starts too. (When incusd failed to start the bridge
	// on its way up, seen once on a busy host, it refuses instances until
	// its retry a minute later: Start waits for that, see instance's
	// TestStartWaitsForANetworkOutOfService.)
	other, err := ex.Create(ctx, executor.Spec{})
	is.NoErr(err)
	is.NoErr(other.Start(ctx))
	is.NoErr(other.Delete(ctx))
	is.NoErr(in.Stop(ctx))
	is.NoErr(in.Delete(ctx))
}

// waitNoPorts waits until the bridge has no ports left: Incus removes an
// instance's veth after the deletion returned, and deleting the bridge
// meanwhile fails (the harness deletes it when the test ends).
func waitNoPorts(t *testing.T, bridge string) {
	deadline := time.Now().Add(time.Minute)
	for {
		ports, _ := filepath.Glob("/sys/class/net/" + bridge + "/brif/*")
		if len(ports) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("bridge %s still has ports %q", bridge, ports)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}
