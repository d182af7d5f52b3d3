package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/matryer/is"
)

// TestMountUnreadable: `mount` of a root-owned 0700 directory into an
// unprivileged container fails, naming the source, why and what to do;
// with --shift the same directory is mounted and readable.
func TestMountUnreadable(t *testing.T) {
	t.Parallel() // its own owner: nothing shared with other tests but the daemon
	is := is.New(t)
	d, owner := busybox(t)
	ctx := t.Context()
	cli := func(args ...string) result {
		return incusexec(t, ctx, d, "", append([]string{"--owner", owner}, args...)...)
	}
	r := cli("launch", "--image", incustest.BusyboxAlias)
	is.Equal(r.code, 0)
	name := strings.TrimSpace(r.stdout)
	defer func() { is.Equal(cli("delete", name).code, 0) }()
	src := filepath.Join(t.TempDir(), "private")
	is.NoErr(os.Mkdir(src, 0o700))
	is.NoErr(os.WriteFile(filepath.Join(src, "f"), []byte("secret\n"), 0o600))

	r = cli("mount", name, "data", src)
	is.Equal(r.code, exitFailure)
	for _, want := range []string{src, "unprivileged", "--shift", "chmod o+rx"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr %q does not mention %q", r.stderr, want)
		}
	}
	r = cli("mount", name, "data", src, "--shift")
	is.Equal(r.code, 0)
	path := strings.TrimSpace(r.stdout)
	r = cli("exec", name, "--", "cat", path+"/f")
	is.Equal(r.code, 0)
	is.Equal(r.stdout, "secret\n")
	is.Equal(cli("unmount", name, "data").code, 0)
}
