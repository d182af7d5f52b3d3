package incus_test

import (
	"context"
	"fmt"
	"log"

	"github.com/incusexec/incusexec/executor"
	mountincus "github.com/incusexec/incusexec/mount/incus"
	incus "github.com/lxc/incus/v6/client"
)

// The disk device of an alias is named after its hash, as its path is.
func ExampleDeviceName() {
	fmt.Println(mountincus.DeviceName("isabelle/heaps"))
	// Output:
	// incusexec-mount-c2a7ae348e873efadc082b36d25548af
}

// A gateway shares a host directory with a running instance for the length
// of a session.
func ExampleManager() {
	c, err := incus.ConnectIncusUnix("", nil)
	if err != nil {
		log.Fatal(err)
	}
	m, err := mountincus.New(mountincus.Config{Client: c, AllowedRoots: []string{"/srv/shared"}, Owner: "gateway-1"})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	h, err := m.Acquire(ctx, "session-42", "isabelle/heaps", "/srv/shared/heaps", executor.MountOptions{ReadOnly: true})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("the session finds its heaps at", h.Path)
	// ... the session runs ...
	if err := m.Release(ctx, h); err != nil {
		log.Fatal(err)
	}
}
