package instance_test

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/incusexec/incusexec/instance"
	"github.com/matryer/is"
)

// failingAfter yields n zero bytes, then fails, as a source read from the
// network or a full disk does part-way.
type failingAfter struct{ n int }

func (f *failingAfter) Read(p []byte) (int, error) {
	if f.n == 0 {
		return 0, errors.New("source broke")
	}
	k := min(len(p), f.n)
	clear(p[:k])
	f.n -= k
	return k, nil
}

// TestFailedPushLeavesNoPartialFile: a push that fails part-way removes what
// it wrote, so that a full disk gets its space back and nobody reads half a
// file as whole.
func TestFailedPushLeavesNoPartialFile(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	_, m, _ := setup(t, instance.Config{})
	in := launch(t, m, instance.Spec{})
	ctx := ctxFor(t, time.Minute)
	is.NoErr(in.Push(ctx, "/tmp/f", bytes.NewReader([]byte("old")), instance.FileOptions{}))
	err := in.Push(ctx, "/tmp/f", &failingAfter{n: 4 << 20}, instance.FileOptions{})
	is.True(err != nil)
	_, err = in.Pull(ctx, "/tmp/f", io.Discard)
	is.True(errors.Is(err, instance.ErrNotFound)) // no partial file left
}
