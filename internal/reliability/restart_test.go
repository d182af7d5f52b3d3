package reliability_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	mountincus "github.com/incusexec/incusexec/mount/incus"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/imagebuild"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/internal/incustest"
	incus "github.com/lxc/incus/v6/client"
	"github.com/matryer/is"
)

// TestDaemonRestartUnderCalls restarts incusd while an exec, a push, an
// import, a readiness wait and a launch waiting for readiness are in flight.
// Every call must return within its context's deadline plus a few seconds,
// and the same managers, on the same client, must work once the daemon is
// back.
func TestDaemonRestartUnderCalls(t *testing.T) {
	t.Parallel()
	for name, restart := range map[string]func(*incustest.Daemon, context.Context) error{
		"SIGTERM restart": (*incustest.Daemon).Restart,
		"SIGKILL crash":   (*incustest.Daemon).Crash,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			restartUnderCalls(t, restart)
		})
	}
}

func restartUnderCalls(t *testing.T, restart func(*incustest.Daemon, context.Context) error) {
	is := is.New(t)
	d := incustest.Private(t, incustest.Options{Pool: "dir"})
	d.BusyboxImage(t)
	// On SIGTERM incusd waits for running exec operations up to
	// core.shutdown_timeout (minutes, default 5). A recorded exec has no
	// connection whose loss ends it, and a shutting-down daemon starts no
	// exec to signal it, so the `sleep 600` below holds the restart that
	// long: the shortest timeout keeps the restart within restartCtx.
	srv, etag, err := d.Client.GetServer()
	is.NoErr(err)
	srv.Config["core.shutdown_timeout"] = "1"
	is.NoErr(d.Client.UpdateServer(srv.Writable(), etag))
	// Our own client: d.Restart replaces (and disconnects) d.Client, while
	// a host keeps the client it made at start.
	c, err := incus.ConnectIncusUnix(d.Socket, nil)
	is.NoErr(err)
	im, err := instance.New(c, instance.Config{Owner: incustest.UniqueName("restart-"), StopGrace: 5 * time.Second})
	is.NoErr(err)
	defer im.Close()
	importer := &imagebuild.Importer{Client: c, LockDir: t.TempDir()}
	root := t.TempDir()
	// Readable inside the unprivileged container (mount refuses a 0700
	// root-owned source without Shift: mount.ErrUnreadable).
	is.NoErr(os.Chmod(root, 0o755))
	mm, err := mountincus.New(mountincus.Config{Client: c, AllowedRoots: []string{root}, Owner: "restart"})
	is.NoErr(err)

	setup := ctxFor(t, 2*time.Minute)
	busy, err := im.Create(setup, instance.Spec{Image: incustest.BusyboxAlias})
	is.NoErr(err)
	waiting, err := im.Create(setup, instance.Spec{Image: incustest.BusyboxAlias})
	is.NoErr(err)

	const deadline = 30 * time.Second
	const slack = 5 * time.Second
	never := instance.Ready{Probe: func(context.Context, *instance.Instance) (bool, string, error) { return false, "never", nil }}
	pushed, imported := newTrickle(), newTrickle()
	calls := map[string]func(ctx context.Context) error{
		"exec": func(ctx context.Context) error {
			_, err := busy.Exec(ctx, executor.Cmd{Args: []string{"sleep", "600"}})
			return err
		},
		"push": func(ctx context.Context) error {
			return busy.Push(ctx, "/tmp/big", pushed, executor.FileOptions{})
		},
		"import": func(ctx context.Context) error {
			_, err := importer.Import(ctx, imagebuild.Source{ID: incustest.UniqueName("restart-"), Reader: imported}, imagebuild.Options{})
			return err
		},
		"wait-ready": func(ctx context.Context) error {
			return waiting.WaitReady(ctx, never)
		},
		"launch": func(ctx context.Context) error {
			_, err := im.Create(ctx, instance.Spec{Image: incustest.BusyboxAlias, Ready: never})
			return err
		},
	}
	type result struct {
		took time.Duration
		err  error
	}
	var mu sync.Mutex
	results := map[string]result{}
	var wg sync.WaitGroup
	start := time.Now()
	for name, call := range calls {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			err := call(ctx)
			mu.Lock()
			results[name] = result{time.Since(start), err}
			mu.Unlock()
		})
	}
	// Restart once the streams are flowing.
	for pushed.read.Load() < 64<<10 || imported.read.Load() < 64<<10 {
		time.Sleep(100 * time.Millisecond)
		if time.Since(start) > 20*time.Second {
			t.Fatalf("calls did not start: pushed %d, imported %d", pushed.read.Load(), imported.read.Load())
		}
	}
	time.Sleep(time.Second)
	t.Logf("restarting incusd %v after the calls started", time.Since(start).Round(time.Millisecond))
	restartCtx := ctxFor(t, 2*time.Minute)
	is.NoErr(restart(d, restartCtx))
	t.Logf("incusd back %v after the calls started", time.Since(start).Round(time.Millisecond))

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(deadline + slack + 30*time.Second):
		mu.Lock()
		t.Fatalf("calls hang: only %v returned", results)
	}
	for name := range calls {
		r := results[name]
		t.Logf("%s returned after %v: %v", name, r.took.Round(time.Millisecond), r.err)
		if r.took > deadline+slack {
			t.Errorf("%s returned %v after the start, later than its deadline %v plus %v", name, r.took, deadline, slack)
		}
		if r.err == nil && name != "exec" {
			t.Errorf("%s succeeded across the restart", name)
		}
	}

	// The same managers work again, without a new client. (A bridge that
	// incusd failed to start on its way up refuses instances until its
	// retry a minute later: Create waits for that within ctx.)
	ctx := ctxFor(t, 3*time.Minute)
	in, err := im.Create(ctx, instance.Spec{Image: incustest.BusyboxAlias})
	is.NoErr(err)
	var out bytes.Buffer
	code, err := in.Exec(ctx, executor.Cmd{Args: []string{"echo", "back"}, Stdout: &out})
	is.NoErr(err)
	is.Equal(code, 0)
	is.Equal(out.String(), "back\n")
	is.NoErr(in.Push(ctx, "/tmp/f", bytes.NewReader([]byte("data")), executor.FileOptions{}))
	out.Reset()
	_, err = in.Pull(ctx, "/tmp/f", &out)
	is.NoErr(err)
	is.Equal(out.String(), "data")
	is.NoErr(in.WaitReady(ctx, instance.Ready{Probe: func(context.Context, *instance.Instance) (bool, string, error) { return true, "", nil }}))
	h, err := mm.Acquire(ctx, in.Name(), "back", root, executor.MountOptions{ReadOnly: true})
	is.NoErr(err)
	is.NoErr(mm.Release(ctx, h))
	img, err := importer.Import(ctx, imagebuild.Source{ID: incustest.UniqueName("back-"), Reader: bytes.NewReader(tinyRootfs(0))}, imagebuild.Options{})
	is.NoErr(err)
	is.NoErr(importer.Delete(ctx, img.Alias))
	is.NoErr(in.Stop(ctx))
	is.NoErr(in.Delete(ctx))

	// Nothing half-done: the interrupted launch and import left nothing.
	deleted, err := im.GC(ctx, instance.GCOptions{Keep: func(n string) bool { return n == busy.Name() || n == waiting.Name() }})
	is.NoErr(err)
	if len(deleted) > 0 {
		t.Logf("GC deleted %v left by the interrupted launch", deleted)
	}
	imgs, err := c.GetImages()
	is.NoErr(err)
	for _, i := range imgs {
		if i.Properties["incusexec.artifact"] != "" || len(i.Aliases) == 0 {
			t.Errorf("image %s left: %v", i.Fingerprint, fmt.Sprint(i.Aliases))
		}
	}
}
