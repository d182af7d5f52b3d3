package executor_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/incusexec/incusexec/executor"
)

// A part of a backend declares its sentinels with Sentinel: a host tests
// for the executor's, a caller of the part for the part's own.
func ExampleSentinel() {
	errNotHeld := executor.Sentinel("mount: handle not held", executor.ErrNotMounted)
	err := fmt.Errorf("instance web-1: release cache: %w", errNotHeld)
	fmt.Println(err)
	fmt.Println(errors.Is(err, executor.ErrNotMounted), errors.Is(err, errNotHeld))
	// Output:
	// instance web-1: release cache: mount: handle not held
	// true true
}

// A backend's Mount and Unmount keep the holds they took in a MountHolds;
// each Unmount releases the most recent.
func ExampleMountHolds() {
	ctx := context.Background()
	var holds executor.MountHolds[int] // a mounter's handles; ints here
	release := func(_ context.Context, h int) error {
		fmt.Println("release hold", h)
		return nil
	}
	holds.Add("cache", 1)
	holds.Add("cache", 2)
	_ = holds.Release(ctx, "cache", nil, release)
	_ = holds.Release(ctx, "cache", nil, release)
	err := holds.Release(ctx, "cache", nil, release)
	fmt.Println(errors.Is(err, executor.ErrNotMounted))
	// Output:
	// release hold 2
	// release hold 1
	// true
}
