package hostbind_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/incusexec/incusexec/mount"
	"github.com/incusexec/incusexec/mount/hostbind"
)

// An executor creates an instance's directories, binds the data directory
// to /data in the instance, and acquires aliases as with the mount/incus Manager: the
// alias appears under the data directory at the hash that mount.Path names.
func ExampleManager() {
	root, err := os.MkdirTemp("", "hostbind-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(root)
	m, err := hostbind.New(hostbind.Config{Root: root, AllowedRoots: []string{root}})
	if err != nil {
		log.Fatal(err)
	}
	data, err := m.CreateInstance("build-1")
	if err != nil {
		log.Fatal(err)
	}
	rel, _ := filepath.Rel(root, data)
	fmt.Println("bind", rel, "to", mount.DataDir)
	fmt.Println("isabelle/heaps will appear at", mount.Path("isabelle/heaps"))
	// Output:
	// bind build-1/data to /data
	// isabelle/heaps will appear at /data/c2a7ae348e873efadc082b36d25548af
}
