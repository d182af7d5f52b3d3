package incustest

import (
	"errors"
	"testing"

	"github.com/incusexec/incusexec/internal/testimage"
)

// DebianTarball returns the cached Debusine-style system tarball of suite
// (see testimage.DebianTarball), building it on first use; the test is
// skipped, or failed when integration tests are required, where it cannot be
// built.
func DebianTarball(t testing.TB, suite string) string {
	t.Helper()
	path, err := testimage.DebianTarball(suite)
	if err != nil {
		if errors.Is(err, testimage.ErrMissingTool) {
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
	out, err := testimage.Compressed(path, ext)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
