package testimage

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"testing"

	"github.com/matryer/is"

	"github.com/incusexec/incusexec/imagebuild/imagetest"
)

func TestBusyboxTarballHasInitAndApplets(t *testing.T) {
	if _, err := os.Stat(imagetest.BusyboxPath); err != nil {
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
	is.True(names["rootfs/"] != nil) // the root directory, with its mode
}
