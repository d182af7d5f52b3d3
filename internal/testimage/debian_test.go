package testimage

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/matryer/is"
)

func TestMirrorFromSources(t *testing.T) {
	is := is.New(t)
	deb822 := "Types: deb\nURIs: http://a.example/debian-security\nSuites: bookworm-security\n\n" +
		"Types: deb\nURIs: http://a.example/debian http://b.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n"
	is.Equal(mirrorFromDeb822(deb822, "bookworm"), "http://a.example/debian")
	is.Equal(mirrorFromDeb822(deb822, "trixie"), "")
	oneLine := "# x\ndeb [signed-by=/k.gpg arch=amd64] http://c.example/debian bookworm main\n"
	is.Equal(mirrorFromOneLine(oneLine, "bookworm"), "http://c.example/debian")
	is.Equal(mirrorFromOneLine(oneLine, "trixie"), "")
}

func TestBusyboxTarballHasInitAndApplets(t *testing.T) {
	if _, err := os.Stat(BusyboxPath); err != nil {
		t.Skip("busybox-static not installed")
	}
	is := is.New(t)
	b, err := BusyboxTarball()
	is.NoErr(err)
	tr := tar.NewReader(bytes.NewReader(b))
	names := map[string]*tar.Header{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		is.NoErr(err)
		names[h.Name] = h
	}
	is.True(names["metadata.yaml"] != nil)
	is.Equal(names["rootfs/sbin/init"].Linkname, "/bin/busybox")
	is.Equal(names["rootfs/bin/busybox"].Mode, int64(0o755))
	is.Equal(names["rootfs/etc/init.d/rcS"].Mode, int64(0o755))
}

func TestBusyboxSystemTarballIsARootFilesystem(t *testing.T) {
	if _, err := os.Stat(BusyboxPath); err != nil {
		t.Skip("busybox-static not installed")
	}
	is := is.New(t)
	b, err := BusyboxSystemTarball()
	is.NoErr(err)
	tr := tar.NewReader(bytes.NewReader(b))
	names := map[string]bool{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		is.NoErr(err)
		is.True(strings.HasPrefix(h.Name, "./")) // a system tarball, not an image
		names[h.Name] = true
	}
	is.True(names["./sbin/init"])
	is.True(names["./bin/busybox"])
	is.True(!names["./metadata.yaml"])
}
