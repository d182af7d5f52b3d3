package mount_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/incusexec/incusexec/mount"
	incus "github.com/lxc/incus/v6/client"
)

// The path of an alias inside every instance is fixed by its hash.
func ExampleAliasHash() {
	alias := "isabelle/heaps"
	fmt.Println(mount.AliasHash(alias))
	fmt.Println(mount.Path(alias))
	fmt.Println(mount.DeviceName(alias))
	// Output:
	// c2a7ae348e873efadc082b36d25548af
	// /data/c2a7ae348e873efadc082b36d25548af
	// incusexec-mount-c2a7ae348e873efadc082b36d25548af
}

// Sources that are relative, outside the allowed roots or escape them
// through symlinks are refused with ErrNotAllowed.
func ExampleAllowlist_Resolve() {
	allow, err := mount.NewAllowlist("/")
	if err != nil {
		log.Fatal(err)
	}
	_, err = allow.Resolve("srv/shared")
	fmt.Println(err)
	fmt.Println(errors.Is(err, mount.ErrNotAllowed))
	// Output:
	// mount: source not allowed: source "srv/shared" is not absolute
	// true
}

// A gateway shares a host directory with a running instance for the length
// of a session.
func ExampleManager() {
	c, err := incus.ConnectIncusUnix("", nil)
	if err != nil {
		log.Fatal(err)
	}
	m, err := mount.New(mount.Config{Client: c, AllowedRoots: []string{"/srv/shared"}, Owner: "gateway-1"})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	h, err := m.Acquire(ctx, "session-42", "isabelle/heaps", "/srv/shared/heaps", mount.Options{ReadOnly: true})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("the session finds its heaps at", h.Path)
	// ... the session runs ...
	if err := m.Release(ctx, h); err != nil {
		log.Fatal(err)
	}
}
