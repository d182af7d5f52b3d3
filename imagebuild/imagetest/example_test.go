package imagetest_test

import (
	"archive/tar"
	"bytes"
	"fmt"
	"log"

	"github.com/incusexec/incusexec/imagebuild/imagetest"
)

// A busybox system tarball for an importer's test, made in memory.
func ExampleBusybox() {
	tarball, err := imagetest.Busybox()
	if err != nil {
		log.Fatal(err) // no busybox-static: errors.Is(err, imagetest.ErrMissingTool)
	}
	tr := tar.NewReader(bytes.NewReader(tarball))
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		if h.Name == "./sbin/init" {
			fmt.Println(h.Name, "->", h.Linkname)
		}
	}
	// Output: ./sbin/init -> /bin/busybox
}

// A Debian system tarball with systemd for the host's suite, built as root
// with debootstrap on first use and cached for later runs; and a variant of
// one's own, cached under its own name.
func ExampleDebian() {
	path, err := imagetest.Debian{}.Tarball()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(path) // e.g. /var/cache/incusexec-test/debian-bookworm-minbase-systemd-v2.tar

	withCurl, err := imagetest.Debian{Variant: "curl-v1", Include: []string{"curl"}}.Tarball()
	if err != nil {
		log.Fatal(err)
	}
	xz, err := imagetest.Compressed(withCurl, "xz")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(xz)
}
