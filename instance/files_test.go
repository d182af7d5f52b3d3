package instance_test

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/instance"
	"github.com/matryer/is"
)

func TestPushPull64MiBByHash(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	_, m, _ := setup(t, instance.Config{})
	in := launch(t, m, instance.Spec{})
	ctx := ctxFor(t, 2*time.Minute)
	h := sha256.New()
	// Streamed: the reader has no known size.
	src := io.TeeReader(io.LimitReader(rand.Reader, 64<<20), h)
	is.NoErr(in.Push(ctx, "/root/new/dir/blob", struct{ io.Reader }{src}, executor.FileOptions{UID: 1000, GID: 1001, Mode: 0o640, MkdirAll: true}))
	want := hex.EncodeToString(h.Sum(nil))
	is.Equal(strings.Fields(run(t, in, "sha256sum", "/root/new/dir/blob"))[0], want)
	is.Equal(run(t, in, "stat", "-c", "%a %u %g %s", "/root/new/dir/blob"), fmt.Sprintf("640 1000 1001 %d", 64<<20))

	h.Reset()
	info, err := in.Pull(ctx, "/root/new/dir/blob", h)
	is.NoErr(err)
	is.Equal(hex.EncodeToString(h.Sum(nil)), want)
	is.Equal(info, executor.FileInfo{Path: "/root/new/dir/blob", Mode: 0o640, UID: 1000, GID: 1001, Size: 64 << 20})

	// Replacing a file, and a symlink (replaced, not written through).
	is.NoErr(in.Push(ctx, "/root/new/dir/blob", strings.NewReader("small\n"), executor.FileOptions{}))
	is.Equal(run(t, in, "stat", "-c", "%a %u %s", "/root/new/dir/blob"), "644 0 6")
	run(t, in, "ln", "-s", "/etc/hostname", "/root/link")
	is.NoErr(in.Push(ctx, "/root/link", strings.NewReader("x"), executor.FileOptions{Mode: 0o4755}))
	is.Equal(run(t, in, "stat", "-c", "%F %a", "/root/link"), "regular file 4755")
	is.Equal(run(t, in, "cat", "/etc/hostname"), in.Name())
}

func TestFilesBadInput(t *testing.T) {
	t.Parallel()
	_, m, _ := setup(t, instance.Config{})
	in := launch(t, m, instance.Spec{})
	ctx := ctxFor(t, time.Minute)
	for _, tc := range []struct {
		name string
		op   func() error
		want error
	}{
		{"push relative", func() error { return in.Push(ctx, "root/x", strings.NewReader(""), executor.FileOptions{}) }, instance.ErrInvalid},
		{"push empty path", func() error { return in.Push(ctx, "", strings.NewReader(""), executor.FileOptions{}) }, instance.ErrInvalid},
		{"push without parent", func() error { return in.Push(ctx, "/no/such/dir/x", strings.NewReader(""), executor.FileOptions{}) }, instance.ErrNotFound},
		{"pull relative", func() error { _, err := in.Pull(ctx, "./etc/passwd", io.Discard); return err }, instance.ErrInvalid},
		{"pull missing", func() error { _, err := in.Pull(ctx, "/no/such/file", io.Discard); return err }, instance.ErrNotFound},
		{"pull directory", func() error { _, err := in.Pull(ctx, "/etc", io.Discard); return err }, instance.ErrInvalid},
		{"mkdir relative", func() error { return in.Mkdir(ctx, "tmp/x", executor.FileOptions{}) }, instance.ErrInvalid},
		{"mkdir without parent", func() error { return in.Mkdir(ctx, "/no/such/dir", executor.FileOptions{}) }, instance.ErrNotFound},
		{"tree relative", func() error { return in.PushTar(ctx, "dst", bytes.NewReader(nil), instance.TreeOptions{}) }, instance.ErrInvalid},
		{"tree escaping", func() error {
			return in.PushTar(ctx, "/tmp/t", tarOf(t, tarEntry{name: "../../etc/evil", body: "x"}), instance.TreeOptions{})
		}, instance.ErrInvalid},
		{"pull tree missing", func() error { return in.PullTar(ctx, "/no/such", io.Discard) }, instance.ErrNotFound},
		{"on missing instance", func() error {
			return m.Instance("gone-"+in.Name()).Push(ctx, "/x", strings.NewReader(""), executor.FileOptions{})
		}, instance.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.op()
			t.Log(err)
			is.New(t).True(errors.Is(err, tc.want))
		})
	}
	is := is.New(t)
	is.NoErr(in.Mkdir(ctx, "/srv/a/b", executor.FileOptions{UID: 7, GID: 8, Mode: 0o750, MkdirAll: true}))
	is.NoErr(in.Mkdir(ctx, "/srv/a/b", executor.FileOptions{UID: 7, GID: 8, Mode: 0o750})) // exists: fine
	is.Equal(run(t, in, "stat", "-c", "%a %u %g", "/srv/a/b"), "750 7 8")
	is.Equal(run(t, in, "stat", "-c", "%a %u %g", "/srv/a"), "755 0 0")
}

type tarEntry struct {
	name     string
	typ      byte
	mode     int64
	uid, gid int
	body     string
	link     string
}

func tarOf(t testing.TB, entries ...tarEntry) *bytes.Buffer {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	mtime := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		h := &tar.Header{Name: e.name, Typeflag: typ, Mode: mode, Uid: e.uid, Gid: e.gid, Linkname: e.link, ModTime: mtime, Size: int64(len(e.body))}
		if typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return &b
}

// listing describes a tar stream: one line per entry, sorted.
func listing(t testing.TB, r io.Reader) []string {
	t.Helper()
	var out []string
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		out = append(out, fmt.Sprintf("%s %c %o %d:%d %q %q %s", h.Name, h.Typeflag, h.Mode, h.Uid, h.Gid, h.Linkname, body, h.ModTime.UTC().Format(time.RFC3339)))
	}
	sort.Strings(out)
	return out
}

func TestTreeRoundTripKeepsModesAndOwners(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	_, m, _ := setup(t, instance.Config{})
	in := launch(t, m, instance.Spec{})
	ctx := ctxFor(t, time.Minute)
	entries := []tarEntry{
		{name: "./", typ: tar.TypeDir, mode: 0o750, uid: 1000, gid: 1000},
		{name: "bin/", typ: tar.TypeDir, mode: 0o755},
		{name: "bin/tool", mode: 0o4755, body: "#!/bin/sh\necho tool\n"},
		{name: "secret/", typ: tar.TypeDir, mode: 0o500, uid: 1000, gid: 1000},
		{name: "secret/key", mode: 0o400, uid: 1000, gid: 1000, body: "k"},
		{name: "shared/", typ: tar.TypeDir, mode: 0o2775, uid: 1000, gid: 100},
		{name: "shared/notes.txt", mode: 0o664, uid: 1001, gid: 100, body: "notes\n"},
		{name: "shared/link", typ: tar.TypeSymlink, mode: 0o777, link: "notes.txt"},
		{name: "empty", mode: 0o600, uid: 1002, gid: 1002},
	}
	is.NoErr(in.PushTar(ctx, "/srv/tree", tarOf(t, entries...), instance.TreeOptions{}))
	is.Equal(run(t, in, "sh", "-c", "cd /srv/tree && stat -c '%n %a %u %g' . bin bin/tool secret secret/key shared shared/notes.txt empty"),
		". 750 1000 1000\nbin 755 0 0\nbin/tool 4755 0 0\nsecret 500 1000 1000\nsecret/key 400 1000 1000\nshared 2775 1000 100\nshared/notes.txt 664 1001 100\nempty 600 1002 1002")
	is.Equal(run(t, in, "readlink", "/srv/tree/shared/link"), "notes.txt")
	is.Equal(run(t, in, "/srv/tree/bin/tool"), "tool")

	var pulled bytes.Buffer
	is.NoErr(in.PullTar(ctx, "/srv/tree", &pulled))
	got := listing(t, &pulled)
	want := listing(t, tarOf(t, entries...))
	// Symlink modes and times are not carried by SFTP; compare the rest.
	for i := range got {
		if strings.Contains(got[i], "shared/link") {
			got[i] = got[i][:strings.LastIndex(got[i], " ")]
			want[i] = want[i][:strings.LastIndex(want[i], " ")]
		}
	}
	is.Equal(got, want)

	// Everything owned by one user on request.
	is.NoErr(in.PushTar(ctx, "/srv/mine", tarOf(t, entries...), instance.TreeOptions{Owner: &instance.Owner{UID: 2000, GID: 2000}}))
	is.Equal(run(t, in, "sh", "-c", "find /srv/mine ! -type l -exec stat -c '%u:%g' {} + | sort -u"), "2000:2000")
}

func TestPushPullHostDirectory(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	_, m, _ := setup(t, instance.Config{})
	in := launch(t, m, instance.Spec{})
	ctx := ctxFor(t, time.Minute)
	src := t.TempDir()
	is.NoErr(os.MkdirAll(filepath.Join(src, "a/b"), 0o755))
	is.NoErr(os.WriteFile(filepath.Join(src, "a/b/run.sh"), []byte("#!/bin/sh\necho run\n"), 0o755))
	is.NoErr(os.WriteFile(filepath.Join(src, "a/data"), bytes.Repeat([]byte("d"), 300<<10), 0o600))
	is.NoErr(os.Symlink("b/run.sh", filepath.Join(src, "a/run")))
	is.NoErr(os.Chmod(filepath.Join(src, "a"), 0o710))

	is.NoErr(in.PushTree(ctx, src, "/work/in", instance.TreeOptions{Owner: &instance.Owner{UID: 1000, GID: 1000}}))
	is.Equal(run(t, in, "/work/in/a/run"), "run")
	is.Equal(run(t, in, "stat", "-c", "%a %u %s", "/work/in/a/data"), fmt.Sprintf("600 1000 %d", 300<<10))
	is.Equal(run(t, in, "stat", "-c", "%a %u", "/work/in/a"), "710 1000")

	// Results come back; a link in the instance pointing out of the tree is
	// copied as a link and written through nowhere.
	run(t, in, "sh", "-c", "mkdir -p /work/out/sub && echo result > /work/out/sub/r.txt && chmod 640 /work/out/sub/r.txt && ln -s /etc/passwd /work/out/escape")
	dst := filepath.Join(t.TempDir(), "results")
	is.NoErr(in.PullTree(ctx, "/work/out", dst, instance.TreeOptions{}))
	b, err := os.ReadFile(filepath.Join(dst, "sub/r.txt"))
	is.NoErr(err)
	is.Equal(string(b), "result\n")
	st, err := os.Stat(filepath.Join(dst, "sub/r.txt"))
	is.NoErr(err)
	is.Equal(st.Mode().Perm(), fs.FileMode(0o640))
	is.Equal(int(st.Sys().(*syscall.Stat_t).Uid), os.Getuid())
	target, err := os.Readlink(filepath.Join(dst, "escape"))
	is.NoErr(err)
	is.Equal(target, "/etc/passwd")
}
