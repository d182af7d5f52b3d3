package incustest

import (
	"errors"
	"testing"

	"github.com/incusexec/incusexec/imagebuild/imagetest"
)

// DebianTarball returns the cached Debusine-style system tarball of suite
// (see imagetest.Debian.Tarball), building it on first use; the test is
// skipped, or failed when integration tests are required, where it cannot be
// built.
func DebianTarball(t testing.TB, suite string) string {
	t.Helper()
	path, err := imagetest.Debian{Suite: suite}.Tarball()
	if err != nil {
		if errors.Is(err, imagetest.ErrMissingTool) {
			err = errors.Join(ErrUnavailable, err)
		}
		SkipOrFail(t, err)
	}
	return path
}

// CompressedTarball returns path compressed with "gz", "xz" or "zst", cached
// beside it.
func CompressedTarball(t testing.TB, path, ext string) string {
	t.Helper()
	out, err := imagetest.Compressed(path, ext)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
