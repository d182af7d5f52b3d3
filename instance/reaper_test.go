package instance_test

import (
	"errors"
	"testing"
	"time"

	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/matryer/is"
)

// TestReaperDeletesInBackground: instances handed to the reaper are gone
// after Drain, with none of the owner's left; a closed reaper takes no more.
func TestReaperDeletesInBackground(t *testing.T) {
	is := is.New(t)
	_, m, _ := setup(t, instance.Config{})
	ctx := ctxFor(t, 3*time.Minute)
	r := m.NewReaper(instance.ReaperConfig{})
	var ins []*instance.Instance
	for i := range 3 {
		in, err := m.Create(ctx, instance.Spec{Image: incustest.BusyboxAlias, Ephemeral: i%2 == 0})
		is.NoErr(err)
		ins = append(ins, in)
	}
	for _, in := range ins {
		is.NoErr(r.Reap(in))
	}
	is.NoErr(r.Drain(ctx))
	is.Equal(r.Pending(), 0)
	for _, in := range ins {
		_, err := m.Get(ctx, in.Name())
		is.True(errors.Is(err, instance.ErrNotFound)) // deleted
	}
	names, err := m.List(ctx)
	is.NoErr(err)
	is.Equal(len(names), 0)

	last, err := m.Create(ctx, instance.Spec{Image: incustest.BusyboxAlias})
	is.NoErr(err)
	is.NoErr(r.Reap(last))
	is.NoErr(r.Close(ctx)) // waits for the deletion handed over
	_, err = m.Get(ctx, last.Name())
	is.True(errors.Is(err, instance.ErrNotFound))

	more, err := m.Create(ctx, instance.Spec{Image: incustest.BusyboxAlias})
	is.NoErr(err)
	err = r.Reap(more)
	is.True(errors.Is(err, instance.ErrReaperClosed))
	_, err = m.Get(ctx, more.Name())
	is.NoErr(err) // not deleted by a closed reaper
	is.NoErr(more.Delete(ctx))
}
