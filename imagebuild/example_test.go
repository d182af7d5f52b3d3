package imagebuild_test

import (
	"context"
	"fmt"
	"log"

	"github.com/incusexec/incusexec/imagebuild"
	incus "github.com/lxc/incus/v6/client"
)

// A worker makes the image of a system tarball artifact available and
// launches containers from its alias.
func ExampleImporter_Import() {
	client, err := incus.ConnectIncusUnix("", nil)
	if err != nil {
		log.Fatal(err)
	}
	im := &imagebuild.Importer{Client: client}
	img, err := im.Import(context.Background(), imagebuild.Source{
		ID:   "1234",
		Path: "/srv/artifacts/1234/system.tar.xz",
		Metadata: imagebuild.Metadata{
			Architecture: "amd64", OS: "debian", Release: "bookworm",
			Description: "Debian bookworm build environment",
		},
	}, imagebuild.Options{Owner: "debusine-worker"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(img.Alias, img.Reused)
}

func ExampleAlias() {
	alias, err := imagebuild.Alias("1234")
	fmt.Println(alias, err)
	_, err = imagebuild.Alias("../etc")
	fmt.Println(err)
	// Output:
	// artifact/1234 <nil>
	// imagebuild: bad source: artifact ID "../etc" (want 1-128 letters, digits, '.', '_' or '-')
}

func ExampleIncusArchitecture() {
	for _, deb := range []string{"amd64", "arm64", "ppc64el", "armhf"} {
		a, _ := imagebuild.IncusArchitecture(deb)
		fmt.Println(deb, "→", a)
	}
	// Output:
	// amd64 → x86_64
	// arm64 → aarch64
	// ppc64el → ppc64le
	// armhf → armv7l
}
