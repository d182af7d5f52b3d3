package executor_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/incusexec/incusexec/executor"
	"github.com/matryer/is"
)

func TestMountHoldsRelease(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	var holds executor.MountHolds[string]
	var released []string
	fail := errors.New("server down")
	failing := func(context.Context, string) error { return fail }
	gone := func(context.Context, string) error { return fmt.Errorf("gone: %w", executor.ErrNotMounted) }
	ok := func(_ context.Context, h string) error { released = append(released, h); return nil }

	holds.Add("a", "h1")
	// A release that fails is kept for the next Unmount...
	is.True(errors.Is(holds.Release(ctx, "a", nil, failing), fail))
	is.NoErr(holds.Release(ctx, "a", nil, ok))
	is.Equal(released, []string{"h1"})
	// ...unless the mounter says it is not held.
	holds.Add("a", "h2")
	is.True(errors.Is(holds.Release(ctx, "a", nil, gone), executor.ErrNotMounted))
	is.True(errors.Is(holds.Release(ctx, "a", nil, ok), executor.ErrNotMounted))
	// With none recorded, find supplies the hold.
	find := func(context.Context) (string, error) { return "server-hold", nil }
	is.NoErr(holds.Release(ctx, "a", find, ok))
	is.Equal(released, []string{"h1", "server-hold"})
	// Clear forgets everything.
	holds.Add("b", "h3")
	holds.Clear()
	is.True(errors.Is(holds.Release(ctx, "b", nil, ok), executor.ErrNotMounted))
}
