package reliability_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/imagebuild"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/incusexec/incusexec/mount"
	"github.com/incusexec/incusexec/netbridge"
	"github.com/matryer/is"
)

// hostileNames are names a task or a host's request might pass where a
// name is expected: traversal, separators, shell and API syntax, control
// characters, Unicode look-alikes, reserved keys, lengths around limits.
var hostileNames = []string{
	"", ".", "..", "../x", "x/..", "/etc", "a/b", `a\b`, "a b", "a\tb", "a\x00b", "a\nb", "a\rb",
	"-rf", "--", "-", "a-", "1abc", "$(id)", "`id`", "a;b", "a|b", "a&b", "a>b", "a'b", `a"b`,
	"*", "?", "[a]", "%2e%2e", "a%00", "ä", "аbc" /* Cyrillic a */, "\u202eabc", "\ufeffabc",
	"a.b", "a_b", "a:b", "a@b", "a=b", "a,b", "user.incusexec.owner", "volatile.x",
	"project/a", "a?project=other", "a#b", "default", "root", "nobody",
	strings.Repeat("a", 15), strings.Repeat("a", 16), strings.Repeat("a", 32), strings.Repeat("a", 33),
	strings.Repeat("a", 63), strings.Repeat("a", 64), strings.Repeat("a", 129), strings.Repeat("a", 256),
	"\xff\xfe", "a\x7fb",
}

// TestHostileNamesValidated feeds every hostile name to every validator of
// names that reach the server or a path, and checks that what is accepted
// is within the validator's safe alphabet: nothing accepted can name a path,
// an API query or another project.
func TestHostileNamesValidated(t *testing.T) {
	t.Parallel()
	instanceName := regexp.MustCompile(`^[A-Za-z][A-Za-z0-9-]{0,62}$`)
	userName := regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
	bridgeName := regexp.MustCompile(`^[A-Za-z][A-Za-z0-9-]{1,14}$`)
	artifact := regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)
	validators := []struct {
		name     string
		validate func(string) error
		safe     func(string) bool
	}{
		{"executor.CheckName", executor.CheckName, func(s string) bool { return instanceName.MatchString(s) && !strings.HasSuffix(s, "-") }},
		{"mount.CheckInstance", mount.CheckInstance, func(s string) bool { return instanceName.MatchString(s) && !strings.HasSuffix(s, "-") }},
		{"instance.ValidateUserName", instance.ValidateUserName, userName.MatchString},
		{"netbridge.ValidateNetworkName", netbridge.ValidateNetworkName, func(s string) bool { return bridgeName.MatchString(s) && !strings.HasSuffix(s, "-") }},
		{"netbridge.BridgeName", func(s string) error { _, err := netbridge.BridgeName(s); return err }, func(s string) bool { return bridgeName.MatchString(s+"-br") && len(s) <= netbridge.MaxPrefixLen }},
		{"imagebuild.Alias", func(s string) error { _, err := imagebuild.Alias(s); return err }, func(s string) bool { return artifact.MatchString(s) && s != "." && s != ".." }},
		// Aliases are hashed, never used as paths: any UTF-8 without
		// control characters is fine, and the path is the hash's.
		{"mount.ValidateAlias", mount.ValidateAlias, func(s string) bool {
			return s != "" && len(s) <= mount.MaxAliasLen && utf8.ValidString(s) && !strings.ContainsAny(s, "\x00\n\r\t\x7f") &&
				mount.Path(s) == mount.DataDir+"/"+mount.AliasHash(s)
		}},
	}
	tried, refused := 0, 0
	for _, v := range validators {
		t.Run(v.name, func(t *testing.T) {
			for _, s := range hostileNames {
				tried++
				if err := v.validate(s); err != nil {
					refused++
					if !strings.Contains(err.Error(), "invalid") && !strings.Contains(err.Error(), "artifact ID") && !strings.Contains(err.Error(), "prefix") {
						t.Errorf("%q: error does not say what is wrong: %v", s, err)
					}
					continue
				}
				if !v.safe(s) {
					t.Errorf("%q accepted", s)
				}
			}
		})
	}
	t.Logf("SUMMARY inputs=%d refused=%d", tried, refused)
}

// TestAllowlistAfterSymlinks: mount sources resolve, symlinks and all, under
// an allowed root or are refused; a symlink a task planted in a shared
// directory cannot lead the host out of it.
func TestAllowlistAfterSymlinks(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	root, outside := filepath.Join(base, "root"), filepath.Join(base, "outside")
	for _, d := range []string{root, outside, filepath.Join(root, "ok"), filepath.Join(root, "shared")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(root, "file"), nil, 0o644))
	must(os.Symlink(outside, filepath.Join(root, "shared", "escape")))
	must(os.Symlink("../../outside", filepath.Join(root, "shared", "relescape")))
	must(os.Symlink(filepath.Join(root, "ok"), filepath.Join(root, "shared", "inside")))
	must(os.Symlink("/", filepath.Join(root, "shared", "slash")))
	must(os.Symlink("/proc/self/root", filepath.Join(root, "shared", "procroot")))
	must(os.Symlink(filepath.Join(root, "shared", "loop"), filepath.Join(root, "shared", "loop")))
	must(os.Symlink(filepath.Join(root, "shared", "chain2"), filepath.Join(root, "shared", "chain1")))
	must(os.Symlink(outside, filepath.Join(root, "shared", "chain2")))
	must(os.Symlink("/nonexistent", filepath.Join(root, "shared", "dangling")))
	al, err := mount.NewAllowlist(root)
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]string{
		root:                                 root,
		filepath.Join(root, "ok"):            filepath.Join(root, "ok"),
		filepath.Join(root, "shared/inside"): filepath.Join(root, "ok"),
		filepath.Join(root, "ok/../ok"):      filepath.Join(root, "ok"),
		filepath.Join(root, "shared/../ok/"): filepath.Join(root, "ok"),
	}
	refusedSources := []string{
		outside, base, "/", "ok", "./ok", "../root/ok", "",
		root + "/../outside", root + "/ok/../../outside",
		filepath.Join(root, "shared/escape"), filepath.Join(root, "shared/relescape"),
		filepath.Join(root, "shared/slash"), filepath.Join(root, "shared/procroot"),
		filepath.Join(root, "shared/loop"), filepath.Join(root, "shared/chain1"),
		filepath.Join(root, "shared/dangling"), filepath.Join(root, "shared/escape/x"),
		filepath.Join(root, "file"), filepath.Join(root, "missing"), root + "/ok\x00",
		root + "x", // a sibling sharing the root's prefix
	}
	must(os.MkdirAll(root+"x", 0o755))
	for src, want := range allowed {
		got, err := al.Resolve(src)
		if err != nil || got != want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", src, got, err, want)
		}
	}
	for _, src := range refusedSources {
		got, err := al.Resolve(src)
		if !errors.Is(err, mount.ErrNotAllowed) {
			t.Errorf("Resolve(%q) = %q, %v; want ErrNotAllowed", src, got, err)
		}
	}
	t.Logf("SUMMARY inputs=%d allowed=%d refused=%d", len(allowed)+len(refusedSources), len(allowed), len(refusedSources))
}

// TestOwnersAreApart: one owner's managers cannot reach, take over or clean
// up another owner's instances, bridges or profiles, whatever names they
// are given, and cannot create objects labelled as another owner.
func TestOwnersAreApart(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	d := incustest.Shared(t)
	d.BusyboxImage(t)
	ctx := ctxFor(t, 3*time.Minute)
	alice, bob := incustest.UniqueName("a"), incustest.UniqueName("b")
	am, err := instance.New(d.Client, instance.Config{Owner: alice})
	is.NoErr(err)
	defer am.Close()
	bm, err := instance.New(d.Client, instance.Config{Owner: bob})
	is.NoErr(err)
	defer bm.Close()
	bobs, err := bm.Create(ctx, instance.Spec{Image: incustest.BusyboxAlias, NoStart: true})
	is.NoErr(err)
	t.Cleanup(func() { _ = bobs.Delete(ctxFor(t, time.Minute)) })

	// Instances.
	_, err = am.Get(ctx, bobs.Name())
	is.True(errors.Is(err, instance.ErrNotFound))
	names, err := am.List(ctx)
	is.NoErr(err)
	is.Equal(len(names), 0)
	deleted, err := am.GC(ctx, instance.GCOptions{})
	is.NoErr(err)
	is.Equal(len(deleted), 0)
	_, err = bm.Get(ctx, bobs.Name()) // still there
	is.NoErr(err)
	_, err = am.Create(ctx, instance.Spec{Name: bobs.Name(), Image: incustest.BusyboxAlias, NoStart: true})
	is.True(errors.Is(err, instance.ErrAlreadyExists)) // and not replaced
	for _, k := range []string{executor.OwnerKey, instance.LabelID, instance.LabelCreated, "user.incusexec.anything"} {
		_, err = am.Create(ctx, instance.Spec{Image: incustest.BusyboxAlias, NoStart: true, Config: map[string]string{k: bob}})
		is.True(errors.Is(err, instance.ErrInvalid)) // cannot pose as bob
	}

	// Bridges and profiles.
	nb := netbridge.New(d.Client, netbridge.Options{})
	bn, err := nb.Ensure(ctx, netbridge.NetworkSpec{Prefix: bob})
	is.NoErr(err)
	bp, err := nb.EnsureProfile(ctx, netbridge.ProfileSpec{Name: bob, Owner: bob, Network: bn.Name})
	is.NoErr(err)
	t.Cleanup(func() { _, _ = nb.Cleanup(ctxFor(t, time.Minute), bob) })
	_, err = nb.Ensure(ctx, netbridge.NetworkSpec{Name: bn.Name, Owner: alice})
	is.True(errors.Is(err, netbridge.ErrNotOwned))
	_, err = nb.Ensure(ctx, netbridge.NetworkSpec{Name: d.Network, Owner: alice}) // the harness's, no label
	is.True(errors.Is(err, netbridge.ErrNotOwned))
	_, err = nb.EnsureProfile(ctx, netbridge.ProfileSpec{Name: bp.Name, Owner: alice})
	is.True(errors.Is(err, netbridge.ErrNotOwned))
	_, err = nb.EnsureProfile(ctx, netbridge.ProfileSpec{Name: "default", Owner: alice})
	is.True(errors.Is(err, netbridge.ErrNotOwned))
	_, err = nb.EnsureProfile(ctx, netbridge.ProfileSpec{Name: alice, Owner: alice, Config: map[string]string{"user.incusexec.owner": bob}})
	is.True(errors.Is(err, netbridge.ErrInvalid)) // cannot label a profile as bob's
	changes, err := nb.Cleanup(ctx, alice)
	is.NoErr(err)
	is.Equal(len(changes), 0) // nothing of bob's
	_, _, err = d.Client.GetNetwork(bn.Name)
	is.NoErr(err)
	_, _, err = d.Client.GetProfile(bp.Name)
	is.NoErr(err)
}

// TestPlantedSymlinksNotFollowedByHost: links a task plants in a tree the
// host pulls, or in a shared host directory the host pushes, travel as
// links: the host neither writes through them nor copies what they point at.
func TestPlantedSymlinksNotFollowedByHost(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	_, in := launchBusybox(t, instance.Spec{})
	ctx := ctxFor(t, 2*time.Minute)
	base := t.TempDir()
	secret := filepath.Join(base, "secret")
	is.NoErr(os.WriteFile(secret, []byte("host secret\n"), 0o600))
	target := filepath.Join(base, "victim")
	is.NoErr(os.Mkdir(target, 0o755))

	// Pull: the task plants links to host-looking paths in its output.
	_, err := in.Exec(ctx, executor.Cmd{Args: []string{"sh", "-c", "mkdir -p /out/d && ln -s " + target + " /out/escape && ln -s / /out/root && ln -s ../../.. /out/d/up && echo data > /out/d/f"}})
	is.NoErr(err)
	dst := filepath.Join(base, "pulled")
	is.NoErr(in.PullTree(ctx, "/out", dst, instance.TreeOptions{}))
	for _, l := range []string{"escape", "root", "d/up"} {
		fi, err := os.Lstat(filepath.Join(dst, l))
		is.NoErr(err)
		is.True(fi.Mode()&os.ModeSymlink != 0) // kept as a link
	}
	entries, err := os.ReadDir(target)
	is.NoErr(err)
	is.Equal(len(entries), 0) // nothing written through the link

	// Push: a shared directory where a task planted a link to a host file.
	shared := filepath.Join(base, "shared")
	is.NoErr(os.Mkdir(shared, 0o755))
	is.NoErr(os.Symlink(secret, filepath.Join(shared, "innocent")))
	is.NoErr(in.PushTree(ctx, shared, "/in", instance.TreeOptions{}))
	var out bytes.Buffer
	_, err = in.Exec(ctx, executor.Cmd{Args: []string{"sh", "-c", "readlink /in/innocent; cat /in/innocent 2>/dev/null || true"}, Stdout: &out})
	is.NoErr(err)
	is.Equal(out.String(), secret+"\n") // the link itself, not the secret
}
