package main

import (
	"os"
	"strings"
	"testing"

	"github.com/matryer/is"
)

// TestIsDevNull: only the null device counts as "no input" for the
// execute command; files, pipes and in-memory readers keep their stdin.
func TestIsDevNull(t *testing.T) {
	is := is.New(t)
	null, err := os.Open(os.DevNull)
	is.NoErr(err)
	defer null.Close()
	is.True(isDevNull(null))

	file, err := os.CreateTemp(t.TempDir(), "stdin")
	is.NoErr(err)
	defer file.Close()
	is.True(!isDevNull(file))

	r, w, err := os.Pipe()
	is.NoErr(err)
	defer r.Close()
	defer w.Close()
	is.True(!isDevNull(r))

	zero, err := os.Open("/dev/zero") // a character device, not the null one
	is.NoErr(err)
	defer zero.Close()
	is.True(!isDevNull(zero))

	is.True(!isDevNull(strings.NewReader("")))
	is.True(!isDevNull(nil))
}
