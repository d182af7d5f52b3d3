package incusop_test

import (
	"context"
	"errors"
	"testing"

	"github.com/incusexec/incusexec/internal/incusop"
	"github.com/incusexec/incusexec/internal/incustest"
	incus "github.com/lxc/incus/v6/client"
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
