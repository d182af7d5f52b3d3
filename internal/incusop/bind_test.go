package incusop_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/incusexec/incusexec/internal/incusop"
	"github.com/incusexec/incusexec/internal/incustest"
	incus "github.com/lxc/incus/v6/client"
	"github.com/lxc/incus/v6/shared/api"
	"github.com/matryer/is"
)

func TestMain(m *testing.M) { incustest.Main(m) }

// TestBindLeavesClientUnbound binds a client to a context that is then
// cancelled: the bound copy fails, the original keeps working.
func TestBindLeavesClientUnbound(t *testing.T) {
	is := is.New(t)
	d := incustest.Shared(t)
	ctx, cancel := context.WithCancel(context.Background())
	bound := incusop.Bind[incus.InstanceServer](ctx, d.Client)
	_, _, err := bound.GetServer()
	is.NoErr(err)
	cancel()
	_, _, err = bound.GetServer()
	is.True(errors.Is(err, context.Canceled))
	_, _, err = d.Client.GetServer()
	is.NoErr(err) // the shared client is not bound to the cancelled context
}

// TestConcurrentOperationsDoNotRace starts operations from many goroutines
// on one Shared client while an event listener is open on it. On the bare v6
// client the race detector reports its skipEvents field (read unlocked by
// every operation, written by every event connection): `go test -race`
// fails this test when Shared returns its argument unchanged.
func TestConcurrentOperationsDoNotRace(t *testing.T) {
	is := is.New(t)
	d := incustest.Shared(t)
	raw, err := incus.ConnectIncusUnix(d.Socket, nil)
	is.NoErr(err)
	c := incusop.Shared(raw)
	defer c.Disconnect()
	l, err := c.GetEvents()
	is.NoErr(err)
	defer l.Disconnect()
	fp := d.BusyboxImage(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const n = 4
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("incusop-race-%d", i)
			op, err := c.CreateInstance(api.InstancesPost{
				Name:   name,
				Source: api.InstanceSource{Type: "image", Fingerprint: fp},
			})
			if err == nil {
				err = incusop.Wait(ctx, op, c)
			}
			if err != nil {
				errs <- fmt.Errorf("create %s: %w", name, err)
				return
			}
			op, err = c.DeleteInstance(name)
			if err == nil {
				err = incusop.Wait(ctx, op, c)
			}
			if err != nil {
				errs <- fmt.Errorf("delete %s: %w", name, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
