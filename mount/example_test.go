package mount_test

import (
	"errors"
	"fmt"
	"log"

	"github.com/incusexec/incusexec/mount"
)

// The path of an alias inside every instance is fixed by its hash.
func ExampleAliasHash() {
	alias := "isabelle/heaps"
	fmt.Println(mount.AliasHash(alias))
	fmt.Println(mount.Path(alias))
	// Output:
	// c2a7ae348e873efadc082b36d25548af
	// /data/c2a7ae348e873efadc082b36d25548af
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
