package instance_test

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/incusexec/incusexec/instance"
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
