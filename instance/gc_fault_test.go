package instance_test

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/internal/incustest"
	incus "github.com/lxc/incus/v6/client"
	"github.com/lxc/incus/v6/shared/api"
	"github.com/matryer/is"
)

// busyOnce is the real client whose first forced stops are refused as the
// server refuses them while another operation (a host killed in the middle
// of a device update, say) holds the instance: a window too short to hit on
// demand.
type busyOnce struct {
	instance.Client
	refusals, deleteRefusals atomic.Int32
}

func (b *busyOnce) DeleteInstance(name string) (incus.Operation, error) {
	if b.deleteRefusals.Add(-1) >= 0 {
		return nil, errors.New(`Failed to create instance delete operation: Instance is busy running a "start" operation`)
	}
	return b.Client.DeleteInstance(name)
}

func (b *busyOnce) UpdateInstanceState(name string, state api.InstanceStatePut, etag string) (incus.Operation, error) {
	if state.Force && b.refusals.Add(-1) >= 0 {
		return nil, errors.New(`Instance is busy running a "update" operation`)
	}
	return b.Client.UpdateInstanceState(name, state, etag)
}

func TestGCWaitsForBusyInstance(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	d, m, _ := setup(t, instance.Config{})
	in := launch(t, m, instance.Spec{})
	busy := &busyOnce{Client: d.Client}
	busy.refusals.Store(3)
	busy.deleteRefusals.Store(8) // more than the attempts other failures get
	gc, err := instance.New(busy, instance.Config{Owner: m.Owner(), PollInterval: 50 * time.Millisecond})
	is.NoErr(err)
	defer gc.Close()
	deleted, err := gc.GC(ctxFor(t, time.Minute), instance.GCOptions{})
	is.NoErr(err)
	is.Equal(deleted, []string{in.Name()})
	left, err := m.List(ctxFor(t, time.Minute))
	is.NoErr(err)
	is.Equal(len(left), 0)
}

// startedAgain is the real client where a start by another operation (a
// killed host's launch still running on the server) keeps racing the stop
// that precedes a delete: the instance is running again when the delete
// arrives, and the server refuses it.
type startedAgain struct {
	instance.Client
	refusals atomic.Int32
}

func (s *startedAgain) DeleteInstance(name string) (incus.Operation, error) {
	if s.refusals.Add(-1) >= 0 {
		if op, err := s.Client.UpdateInstanceState(name, api.InstanceStatePut{Action: "start"}, ""); err == nil {
			_ = op.Wait()
		}
		return nil, api.StatusErrorf(400, "Instance is running")
	}
	return s.Client.DeleteInstance(name)
}

func TestDeleteOutlastsRacingStarts(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	d, m, _ := setup(t, instance.Config{})
	in := launch(t, m, instance.Spec{})
	racing := &startedAgain{Client: d.Client}
	racing.refusals.Store(8) // more than the attempts other failures get
	m2, err := instance.New(racing, instance.Config{Owner: m.Owner(), PollInterval: 50 * time.Millisecond})
	is.NoErr(err)
	defer m2.Close()
	is.NoErr(m2.Instance(in.Name()).Delete(ctxFor(t, 2*time.Minute)))
	_, err = m.Get(ctxFor(t, time.Minute), in.Name())
	is.True(errors.Is(err, instance.ErrNotFound))
}

// TestConcurrentDeletesAllSucceed deletes each instance from several
// goroutines at once, as a host's teardown and a GC or a pool's reclaim can:
// every Delete returns nil and the instances are gone. (incusd answers a
// delete that found another one of the same instance under way "A matching
// non-reusable operation has now succeeded" once that one is done:
// TestDeleteAfterAnotherDelete covers that answer after more refusals than
// other failures get, and when the other delete failed.)
func TestConcurrentDeletesAllSucceed(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	_, m, _ := setup(t, instance.Config{})
	ctx := ctxFor(t, 3*time.Minute)
	var names []string
	for range 3 {
		in, err := m.Create(ctx, instance.Spec{Image: incustest.BusyboxAlias, NoStart: true})
		is.NoErr(err)
		names = append(names, in.Name())
	}
	const each = 4
	errs := make([]error, len(names)*each)
	var wg sync.WaitGroup
	for i, n := range names {
		for j := range each {
			wg.Go(func() { errs[i*each+j] = m.Instance(n).Delete(ctx) })
		}
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("delete %d of %s: %v", i%each, names[i/each], err)
		}
	}
	for _, n := range names {
		_, err := m.Get(ctx, n)
		is.True(errors.Is(err, instance.ErrNotFound))
	}
}

// anotherDelete is the real client where another operation holds the
// instance for a while (the first deletes are refused as busy) and then
// another delete of the same instance is under way: incusd makes ours wait
// for it and answers "A matching non-reusable operation has now succeeded"
// whether that one succeeded or failed (seen failing a warm pool's GC in CI,
// after more busy refusals than other failures get).
type anotherDelete struct {
	instance.Client
	busy   atomic.Int32
	failed atomic.Int32 // answers after another delete that failed
	calls  atomic.Int32
}

const waitedForMatching = "Failed to create instance delete operation: A matching non-reusable operation has now succeeded"

func (s *anotherDelete) DeleteInstance(name string) (incus.Operation, error) {
	s.calls.Add(1)
	if s.busy.Add(-1) >= 0 {
		return nil, api.StatusErrorf(400, "Instance is busy running a %q operation", "stop")
	}
	if s.failed.Add(-1) >= 0 {
		return nil, errors.New(waitedForMatching) // the instance is still there
	}
	op, err := s.Client.DeleteInstance(name) // the other delete, which wins
	if err != nil {
		return nil, err
	}
	if err := op.Wait(); err != nil {
		return nil, err
	}
	return nil, errors.New(waitedForMatching)
}

func TestDeleteAfterAnotherDelete(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	d, m, _ := setup(t, instance.Config{})
	for _, failed := range []int32{0, 2} {
		in := launch(t, m, instance.Spec{NoStart: true})
		c := &anotherDelete{Client: d.Client}
		c.busy.Store(6) // more than the attempts other failures get
		c.failed.Store(failed)
		m2, err := instance.New(c, instance.Config{Owner: m.Owner(), PollInterval: 50 * time.Millisecond})
		is.NoErr(err)
		is.NoErr(m2.Instance(in.Name()).Delete(ctxFor(t, time.Minute)))
		m2.Close()
		// Six refusals, the failed other deletes, then the one that won.
		is.Equal(c.calls.Load(), 7+failed)
		_, err = m.Get(ctxFor(t, time.Minute), in.Name())
		is.True(errors.Is(err, instance.ErrNotFound)) // gone, not taken for gone
	}
}
