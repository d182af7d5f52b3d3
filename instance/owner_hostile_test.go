package instance_test

import (
	"errors"
	"testing"
	"time"

	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/lxc/incus/v6/shared/api"
	"github.com/matryer/is"
)

// TestGetFindsOnlyOwnInstances: a name that reaches a manager from a task or
// a host's request cannot get a handle on another owner's instance, nor on
// one that carries no owner label.
func TestGetFindsOnlyOwnInstances(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	d, mine, _ := setup(t, instance.Config{})
	_, theirs, _ := setup(t, instance.Config{})
	ctx := ctxFor(t, 2*time.Minute)
	own := launch(t, mine, instance.Spec{NoStart: true})
	foreign := launch(t, theirs, instance.Spec{NoStart: true})

	_, err := mine.Get(ctx, own.Name())
	is.NoErr(err)
	_, err = mine.Get(ctx, foreign.Name())
	is.True(errors.Is(err, instance.ErrNotFound)) // another owner's

	unlabelled := incustest.UniqueName("unlabelled-")
	op, err := d.Client.CreateInstance(api.InstancesPost{Name: unlabelled, Source: api.InstanceSource{Type: "image", Alias: incustest.BusyboxAlias}})
	is.NoErr(err)
	is.NoErr(op.Wait())
	t.Cleanup(func() {
		if op, err := d.Client.DeleteInstance(unlabelled); err == nil {
			_ = op.Wait()
		}
	})
	_, err = mine.Get(ctx, unlabelled)
	is.True(errors.Is(err, instance.ErrNotFound)) // no owner at all
}
