package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/executor/executortest"
	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/matryer/is"
)

func TestMain(m *testing.M) { incustest.Main(m) }

// newChroot returns a chroot executor under a test directory, deleting its
// instances (and so their mounts) before the directory goes.
func newChroot(t *testing.T) *Executor {
	t.Helper()
	if os.Geteuid() != 0 {
		incustest.SkipOrFail(t, errors.Join(incustest.ErrUnavailable, errors.New("the chroot executor needs root")))
	}
	cx, err := New(Config{Root: t.TempDir(), AllowedRoots: []string{os.TempDir()}, Owner: "custombackend-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cx.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return cx
}

// TestConformance runs executor/executortest, the suite the Incus backend
// and the fake pass, against the chroot executor.
func TestConformance(t *testing.T) {
	executortest.Run(t, func(t *testing.T) executor.Executor { return newChroot(t) }, executortest.Options{RemoveImage: true})
}

func TestDemo(t *testing.T) {
	is := is.New(t)
	newChroot(t) // skips where not root
	var out strings.Builder
	is.NoErr(demo(t.Context(), out.WriteString))
	t.Log(out.String())
	is.True(strings.Contains(out.String(), "worker\n  from the host\n  read-only"))
	is.True(strings.Contains(out.String(), "exited with 3"))
	is.True(strings.Contains(out.String(), "instances left: 0"))
}

// TestPathsStayInside checks what the conformance suite does not: file
// operations cannot leave the instance's directory through a symlink.
func TestPathsStayInside(t *testing.T) {
	is := is.New(t)
	cx := newChroot(t)
	ctx := t.Context()
	is.NoErr(cx.EnsureImage(ctx))
	in, err := cx.Create(ctx, executor.Spec{})
	is.NoErr(err)
	is.NoErr(in.Start(ctx))
	outside := filepath.Join(t.TempDir(), "outside")
	is.NoErr(os.WriteFile(outside, []byte("host secret"), 0o600))
	_, err = executor.Output(ctx, in, executor.Cmd{Args: []string{"ln", "-s", outside, "/tmp/escape"}})
	is.NoErr(err)
	var got strings.Builder
	_, err = in.Pull(ctx, "/tmp/escape", &got)
	is.True(err != nil) // a symlink, not followed out
	is.Equal(got.String(), "")
	err = in.Push(ctx, "/tmp/escape", strings.NewReader("overwritten"), executor.FileOptions{})
	is.True(err != nil)
	b, err := os.ReadFile(outside)
	is.NoErr(err)
	is.Equal(string(b), "host secret")
}
