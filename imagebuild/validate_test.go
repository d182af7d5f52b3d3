package imagebuild

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/matryer/is"
)

var update = flag.Bool("update", false, "rewrite testdata/bad and the fuzz seed corpus")

// entry is one tar entry of a test archive.
type entry struct {
	name, link string
	typ        byte
	body       string
	size       int64 // claimed size when body is empty and size is set
}

func file(name, body string) entry  { return entry{name: name, typ: tar.TypeReg, body: body} }
func dir(name string) entry         { return entry{name: name, typ: tar.TypeDir} }
func symlink(name, to string) entry { return entry{name: name, typ: tar.TypeSymlink, link: to} }
func hardlink(name, to string) entry {
	return entry{name: name, typ: tar.TypeLink, link: to}
}

// mkTar returns an uncompressed tar of entries.
func mkTar(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.body)), Format: tar.FormatPAX}
		if e.typ == tar.TypeDir {
			h.Mode = 0o755
		}
		if e.size != 0 {
			h.Size = e.size
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("header %q: %v", e.name, err)
		}
		if e.body != "" {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil && !strings.Contains(err.Error(), "missed writing") {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// minimal is the smallest valid root filesystem.
func minimal(t testing.TB, extra ...entry) []byte {
	return mkTar(t, append([]entry{dir("./"), dir("./sbin/"), file("./sbin/init", "#!/bin/sh\n")}, extra...)...)
}

func gz(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// tool compresses b with the host's xz or zstd.
func tool(t testing.TB, name string, b []byte) []byte {
	t.Helper()
	cmd := exec.Command(name, "-c", "-q")
	cmd.Stdin = bytes.NewReader(b)
	out, err := cmd.Output()
	if err != nil {
		t.Skipf("%s unavailable: %v", name, err)
	}
	return out
}

// badCase is an archive that must be refused, and why.
type badCase struct {
	name string
	data func(t testing.TB) []byte
	want error
	// mention is a string the error must contain (the entry at fault).
	mention string
}

func badCases() []badCase {
	return []badCase{
		{"unsafe-dotdot.tar", func(t testing.TB) []byte { return minimal(t, file("./../etc/passwd", "x")) }, ErrUnsafeEntry, "../etc/passwd"},
		{"unsafe-dotdot-inner.tar", func(t testing.TB) []byte { return minimal(t, file("./usr/../../x", "x")) }, ErrUnsafeEntry, "usr/../../x"},
		{"unsafe-absolute.tar", func(t testing.TB) []byte { return minimal(t, file("/etc/shadow", "x")) }, ErrUnsafeEntry, "/etc/shadow"},
		{"unsafe-hardlink-outside.tar", func(t testing.TB) []byte { return minimal(t, hardlink("./etc/x", "../../etc/shadow")) }, ErrUnsafeEntry, "../../etc/shadow"},
		{"unsafe-hardlink-absolute.tar", func(t testing.TB) []byte { return minimal(t, hardlink("./etc/x", "/etc/shadow")) }, ErrUnsafeEntry, "/etc/shadow"},
		{"unsafe-hardlink-missing.tar", func(t testing.TB) []byte { return minimal(t, hardlink("./etc/x", "./etc/not-there")) }, ErrUnsafeEntry, "./etc/not-there"},
		{"unsafe-through-symlink.tar", func(t testing.TB) []byte {
			return minimal(t, symlink("./escape", "/"), file("./escape/etc/passwd", "x"))
		}, ErrUnsafeEntry, "./escape/etc/passwd"},
		{"noinit.tar", func(t testing.TB) []byte { return mkTar(t, dir("./"), file("./etc/hostname", "x\n")) }, ErrNoInit, ""},
		{"noinit-dir.tar", func(t testing.TB) []byte { return mkTar(t, dir("./"), dir("./sbin/init/")) }, ErrNoInit, ""},
		{"empty.tar", func(t testing.TB) []byte { return mkTar(t) }, ErrBadArchive, "empty"},
		{"empty-file.tar", func(t testing.TB) []byte { return nil }, ErrBadArchive, ""},
		{"not-a-tar.tar", func(t testing.TB) []byte { return bytes.Repeat([]byte("this is not a tar archive\n"), 40) }, ErrBadArchive, ""},
		{"truncated.tar", func(t testing.TB) []byte {
			b := minimal(t, file("./big", strings.Repeat("x", 5000)))
			return b[:2048+512+100]
		}, ErrBadArchive, "truncated"},
		{"absurd-size.tar", func(t testing.TB) []byte {
			return minimal(t, entry{name: "./huge", typ: tar.TypeReg, size: 1 << 50})
		}, ErrBadArchive, "./huge"},
		{"corrupt.tar.gz", func(t testing.TB) []byte {
			b := gz(t, minimal(t))
			b[len(b)/2] ^= 0xff
			return b
		}, ErrBadArchive, "gzip"},
		{"truncated.tar.gz", func(t testing.TB) []byte { b := gz(t, minimal(t)); return b[:len(b)/2] }, ErrBadArchive, ""},
		{"corrupt.tar.xz", func(t testing.TB) []byte {
			b := tool(t, "xz", minimal(t))
			b[len(b)/2] ^= 0xff
			return b
		}, ErrBadArchive, "xz"},
		{"truncated.tar.xz", func(t testing.TB) []byte { b := tool(t, "xz", minimal(t)); return b[:len(b)-30] }, ErrBadArchive, "xz"},
		{"corrupt.tar.zst", func(t testing.TB) []byte {
			b := tool(t, "zstd", minimal(t, file("./pad", strings.Repeat("abcdefgh", 200))))
			b[len(b)/2] ^= 0xff
			return b
		}, ErrBadArchive, "zstd"},
		{"truncated.tar.zst", func(t testing.TB) []byte { b := tool(t, "zstd", minimal(t)); return b[:len(b)-10] }, ErrBadArchive, "zstd"},
		{"noinit.tar.xz", func(t testing.TB) []byte { return tool(t, "xz", mkTar(t, dir("./"), file("./x", "x"))) }, ErrNoInit, ""},
	}
}

// validateBytes runs b through the streaming validation Import uses.
func validateBytes(b []byte) error {
	pr, pw := io.Pipe()
	go func() { _, err := pw.Write(b); pw.CloseWithError(err) }()
	defer pr.Close()
	return validateStream(context.Background(), pr)
}

func TestValidateRefusesBadArchives(t *testing.T) {
	for _, c := range badCases() {
		t.Run(c.name, func(t *testing.T) {
			is := is.New(t)
			err := validateBytes(c.data(t))
			is.True(err != nil)
			t.Log(err)
			is.True(errors.Is(err, c.want)) // the right sentinel
			is.True(strings.Contains(err.Error(), c.mention))
		})
	}
}

// TestCommittedBadCorpus checks the committed bad archives in testdata/bad,
// whose names say what is wrong with them; -update rewrites them and the
// fuzz seed corpus from badCases.
func TestCommittedBadCorpus(t *testing.T) {
	if *update {
		writeCorpus(t)
	}
	files, err := filepath.Glob("testdata/bad/*")
	if err != nil || len(files) == 0 {
		t.Fatalf("no committed bad archives: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			sentinel := ErrBadArchive
			switch base := filepath.Base(f); {
			case strings.HasPrefix(base, "unsafe"):
				sentinel = ErrUnsafeEntry
			case strings.HasPrefix(base, "noinit"):
				sentinel = ErrNoInit
			}
			err = validateBytes(b)
			if !errors.Is(err, sentinel) {
				t.Fatalf("validate %s: %v, want %v", f, err, sentinel)
			}
		})
	}
}

func writeCorpus(t *testing.T) {
	if err := os.MkdirAll("testdata/bad", 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range badCases() {
		if err := os.WriteFile(filepath.Join("testdata/bad", c.name), c.data(t), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	seeds := map[string][]byte{"minimal": minimal(t), "usrmerge": usrmerged(t)}
	for _, c := range badCases() {
		if strings.HasSuffix(c.name, ".tar") {
			seeds[c.name] = c.data(t)
		}
	}
	for _, target := range []string{"FuzzValidate", "FuzzReroot"} {
		d := filepath.Join("testdata/fuzz", target)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, b := range seeds {
			content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
			if err := os.WriteFile(filepath.Join(d, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// usrmerged is a small root filesystem shaped like Debian's: symbolic links
// for /sbin and /bin, the init a link, and a hard link.
func usrmerged(t testing.TB) []byte {
	return mkTar(t,
		dir("./"), dir("./usr/"), dir("./usr/sbin/"), dir("./usr/bin/"), dir("./lib/"),
		symlink("./sbin", "usr/sbin"), symlink("./bin", "usr/bin"),
		file("./lib/systemd", "ELF"), symlink("./usr/sbin/init", "../../lib/systemd"),
		file("./usr/bin/perl", "perl"), hardlink("./usr/bin/perl5.36", "./usr/bin/perl"),
		entry{name: "./dev/", typ: tar.TypeDir}, entry{name: "./dev/null", typ: tar.TypeChar},
	)
}

func TestValidateAcceptsRootFilesystems(t *testing.T) {
	for name, b := range map[string][]byte{
		"minimal":         minimal(t),
		"usrmerged":       usrmerged(t),
		"usrmerged.gz":    gz(t, usrmerged(t)),
		"usrmerged.xz":    tool(t, "xz", usrmerged(t)),
		"usrmerged.zst":   tool(t, "zstd", usrmerged(t)),
		"no-dot-prefix":   mkTar(t, dir("sbin/"), file("sbin/init", "x")),
		"usr-sbin-init":   mkTar(t, dir("usr/"), dir("usr/sbin/"), file("usr/sbin/init", "x")),
		"trailing-zeroes": append(minimal(t), make([]byte, 10240)...),
	} {
		t.Run(name, func(t *testing.T) {
			is.New(t).NoErr(validateBytes(b))
		})
	}
}

func TestRerootRewritesNamesAndHardLinks(t *testing.T) {
	is := is.New(t)
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	is.NoErr(Reroot(tw, bytes.NewReader(usrmerged(t)), "rootfs"))
	is.NoErr(tw.Close())
	got := map[string]*tar.Header{}
	tr := tar.NewReader(&out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		is.NoErr(err)
		is.True(strings.HasPrefix(h.Name, "rootfs/")) // every entry under rootfs/
		got[h.Name] = h
	}
	is.Equal(got["rootfs/usr/bin/perl5.36"].Linkname, "rootfs/usr/bin/perl") // hard link target rewritten
	is.Equal(got["rootfs/sbin"].Linkname, "usr/sbin")                        // symbolic link kept
	is.Equal(got["rootfs/usr/sbin/init"].Linkname, "../../lib/systemd")
	is.Equal(got["rootfs/dev/null"].Typeflag, byte(tar.TypeChar)) // device node kept
	is.True(got["rootfs/"] != nil)
}

func TestRerootRefusesWhatValidateRefuses(t *testing.T) {
	for _, c := range badCases() {
		if !strings.HasSuffix(c.name, ".tar") {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			tw := tar.NewWriter(io.Discard)
			err := Reroot(tw, bytes.NewReader(c.data(t)), "rootfs")
			if !errors.Is(err, c.want) {
				t.Fatalf("Reroot: %v, want %v", err, c.want)
			}
		})
	}
}

// TestValidateRequiresEndOfArchive refuses a stream that stops at an entry
// boundary without the end-of-archive blocks (which Go's reader tolerates
// and GNU tar in incusd does not), and accepts the same entries with them.
func TestValidateRequiresEndOfArchive(t *testing.T) {
	is := is.New(t)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "./sbin/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "./sbin/init", Typeflag: tar.TypeReg, Mode: 0o755, Size: 3},
	} {
		is.NoErr(tw.WriteHeader(h))
		if h.Size > 0 {
			_, err := tw.Write([]byte("#!\n"))
			is.NoErr(err)
		}
	}
	is.NoErr(tw.Flush()) // entries complete, no end-of-archive blocks yet
	err := Validate(bytes.NewReader(buf.Bytes()))
	is.True(errors.Is(err, ErrBadArchive))
	is.True(strings.Contains(err.Error(), "no end-of-archive marker after ./sbin/init"))

	is.NoErr(tw.Close())
	is.NoErr(Validate(bytes.NewReader(buf.Bytes())))
}
