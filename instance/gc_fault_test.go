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
