package incus_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/incusexec/incusexec/executor/incus"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/executor/executortest"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/incusexec/incusexec/netbridge"
	"github.com/matryer/is"
)

func TestMain(m *testing.M) { incustest.Main(m) }

// busyboxBackend returns a backend on the test daemon with an owner of the
// test's own.
func busyboxBackend(t *testing.T) (*incustest.Daemon, *incus.Backend) {
	t.Helper()
	d := incustest.Shared(t)
	d.BusyboxImage(t)
	b, err := incus.NewBackend(t.Context(), incus.Config{
		Client:       d.Client,
		Owner:        incustest.UniqueName("executortest-"),
		AllowedRoots: []string{os.TempDir()},
		Ready:        busyboxReady,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return d, b
}

// busyboxReady waits until commands run in the busybox image: its init has
// nothing else to wait for.
var busyboxReady = instance.Ready{Timeout: time.Minute,
	Probe: func(ctx context.Context, in *instance.Instance) (bool, string, error) {
		code, err := in.Exec(ctx, executor.Cmd{Args: []string{"true"}})
		return err == nil && code == 0, fmt.Sprintf("true exited %d (%v)", code, err), nil
	}}

func TestConformanceIncus(t *testing.T) {
	_, b := busyboxBackend(t)
	executortest.Run(t, func(t *testing.T) executor.Executor {
		ex, err := b.Executor(incus.Image{Alias: incustest.BusyboxAlias})
		if err != nil {
			t.Fatal(err)
		}
		return ex
	}, executortest.Options{})
}

func TestBackendBadInput(t *testing.T) {
	is := is.New(t)
	ctx := t.Context()
	_, err := incus.NewBackend(ctx, incus.Config{Socket: "/nonexistent/unix.socket", Owner: "x"})
	is.True(errors.Is(err, executor.ErrUnavailable))
	is.True(strings.Contains(err.Error(), "/nonexistent/unix.socket"))
	_, err = incus.NewBackend(ctx, incus.Config{Socket: "/nonexistent/unix.socket"})
	is.True(errors.Is(err, executor.ErrInvalid)) // no owner

	d, b := busyboxBackend(t)
	for _, img := range []incus.Image{{}, {ID: "only-id"}, {ID: "bad id/../x", Tarball: "/x.tar"}} {
		_, err := b.Executor(img)
		is.True(errors.Is(err, executor.ErrInvalid)) // bad image
	}
	ex, err := b.Executor(incus.Image{Alias: "executortest/missing"})
	is.NoErr(err)
	is.True(errors.Is(ex.EnsureImage(ctx), executor.ErrNotFound))
	_, err = ex.Create(ctx, executor.Spec{})
	is.True(err != nil) // no such image

	// A bridge prefix too long for an interface name: nothing is created.
	before, err := d.Client.GetNetworkNames()
	is.NoErr(err)
	_, err = incus.NewBackend(ctx, incus.Config{Client: d.Client, Owner: "x",
		Network: &netbridge.NetworkSpec{Prefix: "much-too-long-prefix"}})
	is.True(errors.Is(err, executor.ErrInvalid))
	after, err := d.Client.GetNetworkNames()
	is.NoErr(err)
	is.Equal(before, after)
}

// TestBackendOutlivesConnectContext connects with a context that then ends:
// the backend must keep working, since hosts connect under a start-up
// deadline and clean up long after it.
func TestBackendOutlivesConnectContext(t *testing.T) {
	is := is.New(t)
	d := incustest.Shared(t)
	d.BusyboxImage(t)
	ctx, cancel := context.WithCancel(context.Background())
	b, err := incus.NewBackend(ctx, incus.Config{Socket: d.Socket, Owner: incustest.UniqueName("outlive-")})
	is.NoErr(err)
	defer b.Close()
	cancel()
	ex, err := b.Executor(incus.Image{Alias: incustest.BusyboxAlias})
	is.NoErr(err)
	bg := context.Background()
	in, err := ex.Create(bg, executor.Spec{Ephemeral: true})
	is.NoErr(err) // not "context canceled"
	is.NoErr(in.Delete(bg))
	names, err := ex.List(bg)
	is.NoErr(err)
	is.Equal(len(names), 0)
}
