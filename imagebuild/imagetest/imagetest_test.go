package imagetest_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/incusexec/incusexec/imagebuild/imagetest"
	"github.com/matryer/is"
)

func TestBusyboxIsARootFilesystem(t *testing.T) {
	if _, err := os.Stat(imagetest.BusyboxPath); err != nil {
		t.Skip("busybox-static not installed")
	}
	is := is.New(t)
	b, err := imagetest.Busybox()
	is.NoErr(err)
	tr := tar.NewReader(bytes.NewReader(b))
	names := map[string]*tar.Header{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		is.NoErr(err)
		is.True(strings.HasPrefix(h.Name, "./")) // a system tarball, not an image
		names[h.Name] = h
	}
	is.Equal(names["./"].Typeflag, byte(tar.TypeDir))
	is.Equal(names["./sbin/init"].Linkname, imagetest.BusyboxPath)
	is.Equal(names["./bin/busybox"].Mode, int64(0o755))
	is.Equal(names["./etc/init.d/rcS"].Mode, int64(0o755))
	is.Equal(names["./tmp/"].Mode, int64(0o1777))
	is.True(names["./metadata.yaml"] == nil)
}

// TestDebianRefusesUncachableRecipes: a recipe that differs from the plain
// one needs a name of its own in the cache, and names are file-name safe.
// Neither needs root: nothing is built.
func TestDebianRefusesUncachableRecipes(t *testing.T) {
	t.Setenv("INCUSEXEC_TEST_CACHE", t.TempDir())
	for _, d := range []imagetest.Debian{
		{Suite: "bookworm", Include: []string{"curl"}},
		{Suite: "bookworm", Customize: func(string) error { return nil }},
		{Suite: "../etc", Variant: "x"},
		{Suite: "bookworm", Variant: "a/b"},
	} {
		_, err := d.Tarball()
		if err == nil || errors.Is(err, imagetest.ErrMissingTool) {
			t.Errorf("%+v: got %v, want a refusal", d, err)
		}
	}
}

// TestDebianUsesTheCache returns a cached tarball as it is, without root or
// debootstrap.
func TestDebianUsesTheCache(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	t.Setenv("INCUSEXEC_TEST_CACHE", dir)
	is.Equal(imagetest.CacheDir(), dir)
	cached := filepath.Join(dir, "debian-trixie-minbase-build-v9.tar")
	is.NoErr(os.WriteFile(cached, []byte("cached"), 0o644))
	got, err := imagetest.Debian{Suite: "trixie", Variant: "build-v9", Include: []string{"make"}}.Tarball()
	is.NoErr(err)
	is.Equal(got, cached)
}

func TestCompressed(t *testing.T) {
	is := is.New(t)
	path := filepath.Join(t.TempDir(), "system.tar")
	is.NoErr(os.WriteFile(path, bytes.Repeat([]byte("incusexec "), 1000), 0o644))
	gz, err := imagetest.Compressed(path, "gz")
	is.NoErr(err)
	is.Equal(gz, path+".gz")
	b, err := os.ReadFile(gz)
	is.NoErr(err)
	is.True(bytes.HasPrefix(b, []byte{0x1f, 0x8b})) // gzip magic
	_, err = imagetest.Compressed(path, "bz2")
	is.True(err != nil)
}
