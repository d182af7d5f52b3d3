package mount_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/incusexec/incusexec/executor"
	mountincus "github.com/incusexec/incusexec/mount/incus"

	"github.com/incusexec/incusexec/mount"
	"github.com/matryer/is"
)

// TestAliasHash pins the derivation against values computed with
// `printf %s ALIAS | sha256sum | cut -c1-32`: changing it would move every
// mount of every host.
func TestAliasHash(t *testing.T) {
	for alias, want := range map[string]string{
		"isabelle/heaps":        "c2a7ae348e873efadc082b36d25548af",
		"debian/bookworm/cache": "1f3fd563050021cb53f846639ec56f80",
		"é":                     "4a99557e4033c3539de2eb65472017ca",
	} {
		t.Run(alias, func(t *testing.T) {
			is := is.New(t)
			is.Equal(mount.AliasHash(alias), want)
			is.Equal(mount.Path(alias), "/data/"+want)
			is.Equal(mountincus.DeviceName(alias), "incusexec-mount-"+want)
		})
	}
}

func TestValidateAlias(t *testing.T) {
	for _, tc := range []struct {
		alias string
		ok    bool
	}{
		{"a", true},
		{"isabelle/heaps 2024", true},
		{"../../etc", true}, // only its hash is ever a path
		{"ünïcødé", true},
		{strings.Repeat("x", mount.MaxAliasLen), true},
		{"", false},
		{strings.Repeat("x", mount.MaxAliasLen+1), false},
		{"a\x00b", false},
		{"line\nbreak", false},
		{"del\x7f", false},
		{"c1\u0085", false},
		{"\xff\xfe", false},
	} {
		err := mount.ValidateAlias(tc.alias)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateAlias(%q) = %v, want ok=%v", tc.alias, err, tc.ok)
		}
		if err != nil && !errors.Is(err, mount.ErrInvalid) {
			t.Errorf("ValidateAlias(%q) = %v, not ErrInvalid", tc.alias, err)
		}
	}
}

func TestCheckInstance(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"build-42", true},
		{"A1-b2", true},
		{strings.Repeat("a", 63), true},
		{"", false},
		{strings.Repeat("a", 64), false},
		{"1abc", false},
		{"-abc", false},
		{"abc-", false},
		{"a_b", false},
		{"a.b", false},
		{"a/b", false},
		{"..", false},
		{"snap/shot", false},
	} {
		err := mount.CheckInstance(tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("CheckInstance(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func TestValidateOptions(t *testing.T) {
	is := is.New(t)
	is.NoErr(mount.ValidateOptions(executor.MountOptions{}))
	for _, p := range mount.Propagations {
		is.NoErr(mount.ValidateOptions(executor.MountOptions{Propagation: p}))
	}
	is.True(errors.Is(mount.ValidateOptions(executor.MountOptions{Propagation: "Shared"}), mount.ErrInvalid))
	is.True(errors.Is(mount.ValidateOptions(executor.MountOptions{Propagation: "rbind"}), mount.ErrInvalid))
}

func TestNewAllowlist(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	link := filepath.Join(t.TempDir(), "link")
	is.NoErr(os.Symlink(dir, link))
	a, err := mount.NewAllowlist(link)
	is.NoErr(err)
	is.Equal(a.Roots(), []string{dir}) // recorded resolved

	for _, bad := range []string{"relative", filepath.Join(dir, "missing")} {
		_, err := mount.NewAllowlist(bad)
		is.True(errors.Is(err, mount.ErrInvalid))
	}
	file := filepath.Join(dir, "f")
	is.NoErr(os.WriteFile(file, nil, 0o644))
	_, err = mount.NewAllowlist(file)
	is.True(errors.Is(err, mount.ErrInvalid))

	var zero mount.Allowlist
	_, err = zero.Resolve(dir)
	is.True(errors.Is(err, mount.ErrNotAllowed)) // nothing allowed

	_, err = a.Resolve(filepath.Join(dir, "missing"))
	is.True(errors.Is(err, mount.ErrNotAllowed))
	is.True(errors.Is(err, fs.ErrNotExist))

	// A sibling whose name extends the root's is not under it.
	sibling := dir + "-evil"
	is.NoErr(os.Mkdir(sibling, 0o755))
	t.Cleanup(func() { os.Remove(sibling) })
	_, err = a.Resolve(sibling)
	is.True(errors.Is(err, mount.ErrNotAllowed))
	is.True(!a.Contains(sibling))
	is.True(a.Contains(dir + "/x/../y"))
	is.True(!a.Contains(dir + "/../y"))
	is.True(!a.Contains("y"))
}

// FuzzValidateAlias checks that every accepted alias maps to a path made of
// exactly DataDir and HashLen lowercase hex digits and a device name within
// Incus's limits, and that distinct aliases map to distinct paths.
func FuzzValidateAlias(f *testing.F) {
	for _, s := range []string{"a", "isabelle/heaps", "../..", "\x00", "é", strings.Repeat("z", 300)} {
		f.Add(s, s+"x")
	}
	dev := regexp.MustCompile(`^[a-z0-9-]{1,63}$`)
	f.Fuzz(func(t *testing.T, a, b string) {
		err := mount.ValidateAlias(a)
		if err != nil {
			if !errors.Is(err, mount.ErrInvalid) {
				t.Fatalf("%q: %v is not ErrInvalid", a, err)
			}
			return
		}
		if !utf8.ValidString(a) || a == "" || len(a) > mount.MaxAliasLen || strings.ContainsAny(a, "\x00\n\r\t") {
			t.Fatalf("accepted %q", a)
		}
		p := mount.Path(a)
		h, ok := strings.CutPrefix(p, mount.DataDir+"/")
		if !ok || len(h) != mount.HashLen || strings.Trim(h, "0123456789abcdef") != "" || filepath.Clean(p) != p {
			t.Fatalf("Path(%q) = %q", a, p)
		}
		if !dev.MatchString(mountincus.DeviceName(a)) {
			t.Fatalf("DeviceName(%q) = %q", a, mountincus.DeviceName(a))
		}
		if a != b && mount.Path(a) == mount.Path(b) {
			t.Fatalf("collision: %q and %q", a, b)
		}
	})
}

// FuzzResolve throws arbitrary paths at an allowlist over a tree holding
// symlinks that escape and symlinks that stay: whatever Resolve accepts
// must be an existing directory that, resolved once more, is itself and lies
// under the root.
func FuzzResolve(f *testing.F) {
	base := f.TempDir()
	root := filepath.Join(base, "root")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{root, outside, filepath.Join(root, "a", "b"), filepath.Join(outside, "x")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			f.Fatal(err)
		}
	}
	for link, target := range map[string]string{
		"esc":     outside,
		"rel-esc": "../outside/x",
		"in":      "a/b",
		"loop":    "loop",
		"up":      "..",
		"a/b/abs": "/",
	} {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			f.Fatal(err)
		}
	}
	al, err := mount.NewAllowlist(root)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"a", "a/b", "esc", "esc/x", "rel-esc", "in", "in/../..", "loop", "up/outside", "a/b/abs/etc", "a/../../outside", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rel string) {
		for _, src := range []string{filepath.Join(root, rel), root + "/" + rel, rel} {
			got, err := al.Resolve(src)
			if err != nil {
				if !errors.Is(err, mount.ErrNotAllowed) {
					t.Fatalf("Resolve(%q): %v is not ErrNotAllowed", src, err)
				}
				continue
			}
			again, err := filepath.EvalSymlinks(got)
			if err != nil || again != got {
				t.Fatalf("Resolve(%q) = %q, which resolves to %q (%v)", src, got, again, err)
			}
			if got != root && !strings.HasPrefix(got, root+"/") {
				t.Fatalf("Resolve(%q) = %q, outside %s", src, got, root)
			}
			fi, err := os.Stat(got)
			if err != nil || !fi.IsDir() {
				t.Fatalf("Resolve(%q) = %q, not a directory (%v)", src, got, err)
			}
		}
	})
}
