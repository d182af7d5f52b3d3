package imagebuild

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"testing"
	"time"
)

// deviceTarball is a root filesystem with one device node at name.
func deviceTarball(typ byte, name string) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, d := range []string{"./", "./sbin/", "./dev/", "./etc/"} {
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: time.Unix(1e9, 0)})
	}
	_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "./sbin/init", Mode: 0o755, Size: 2, ModTime: time.Unix(1e9, 0)})
	_, _ = tw.Write([]byte("#!"))
	_ = tw.WriteHeader(&tar.Header{Typeflag: typ, Name: name, Mode: 0o666, Devmajor: 1, Devminor: 1, ModTime: time.Unix(1e9, 0)})
	_ = tw.Close()
	return b.Bytes()
}

// TestDeviceNodesOnlyInDev: Incus makes an image's device nodes as root on
// the host; a root filesystem has them under /dev, and one elsewhere (a
// /dev/mem twin in /etc, say) is refused.
func TestDeviceNodesOnlyInDev(t *testing.T) {
	for _, c := range []struct {
		typ  byte
		name string
		ok   bool
	}{
		{tar.TypeChar, "./dev/null", true},
		{tar.TypeBlock, "./dev/loop0", true},
		{tar.TypeChar, "./etc/mem", false},
		{tar.TypeBlock, "./home/sda", false},
		{tar.TypeChar, "./devx", false},
		{tar.TypeChar, "./dev", false},
		{tar.TypeFifo, "./etc/fifo", true},
	} {
		err := validateBytes(deviceTarball(c.typ, c.name))
		if c.ok && err != nil || !c.ok && !errors.Is(err, ErrUnsafeEntry) {
			t.Errorf("%c %s: %v", c.typ, c.name, err)
		}
	}
	// The committed corpus has the case too (TestCommittedBadCorpus).
	if _, err := os.Stat("testdata/bad/unsafe-device-outside-dev.tar"); err != nil {
		t.Error(err)
	}
}
