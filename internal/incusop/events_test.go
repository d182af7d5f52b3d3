package incusop_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/incusexec/incusexec/internal/incusop"
	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/lxc/incus/v6/shared/api"
	"github.com/matryer/is"
)

// TestEventsAsksTheServerForTheTypesGiven opens two listeners on the same
// client, one for lifecycle events only and one for all, and creates and
// deletes an instance: the server sends the first the instance's lifecycle
// events and none of its operation events, which the second gets.
func TestEventsAsksTheServerForTheTypesGiven(t *testing.T) {
	is := is.New(t)
	d := incustest.Shared(t)
	d.BusyboxImage(t)
	type seen struct {
		mu    sync.Mutex
		types map[string]int
	}
	listen := func(types ...string) (*seen, func()) {
		l, err := incusop.Events(d.Client, types...)
		is.NoErr(err)
		s := &seen{types: map[string]int{}}
		// A handler of every type: the filter, if any, is the server's.
		_, err = l.AddHandler(nil, func(e api.Event) {
			s.mu.Lock()
			s.types[e.Type]++
			s.mu.Unlock()
		})
		is.NoErr(err)
		return s, l.Disconnect
	}
	lifecycle, stop1 := listen(api.EventTypeLifecycle)
	defer stop1()
	all, stop2 := listen()
	defer stop2()

	name := incustest.UniqueName("events-")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	op, err := d.Client.CreateInstance(api.InstancesPost{
		Name: name, Source: api.InstanceSource{Type: "image", Alias: incustest.BusyboxAlias},
	})
	is.NoErr(err)
	is.NoErr(op.WaitContext(ctx))
	op, err = d.Client.DeleteInstance(name)
	is.NoErr(err)
	is.NoErr(op.WaitContext(ctx))

	// Events arrive asynchronously: wait until the unfiltered listener has
	// the deletion's lifecycle event, then until the filtered one has as
	// many lifecycle events.
	count := func(s *seen, typ string) int {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.types[typ]
	}
	deadline := time.Now().Add(30 * time.Second)
	for (count(all, api.EventTypeLifecycle) < 2 || count(lifecycle, api.EventTypeLifecycle) < count(all, api.EventTypeLifecycle)) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	is.True(count(all, api.EventTypeLifecycle) >= 2)                                       // instance-created, instance-deleted
	is.Equal(count(lifecycle, api.EventTypeLifecycle), count(all, api.EventTypeLifecycle)) // the same lifecycle events
	is.True(count(all, api.EventTypeOperation) > 0)                                        // the unfiltered listener gets operations
	is.Equal(count(lifecycle, api.EventTypeOperation), 0)                                  // the filtered one does not
	is.Equal(count(lifecycle, api.EventTypeLogging), 0)
}
