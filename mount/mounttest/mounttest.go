package mounttest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/mount"
	"github.com/matryer/is"
)

// Mounter is what the suite exercises.
type Mounter interface {
	mount.Mounter
	mount.Inspector
}

// Key names one mount: an instance and the hash of an alias.
type Key struct {
	Instance string
	Hash     string
}

// Transitions counts how often a mount was attached and detached.
type Transitions struct {
	Attached, Detached int
}

// Harness adapts an implementation to the suite.
type Harness struct {
	// New returns a mounter allowing sources under roots. Every mounter it
	// returns works on the same instances: a second one stands for the host
	// process restarting.
	New func(t testing.TB, roots []string) Mounter
	// CreateInstance returns the name of a new instance that mounts can be
	// attached to and files read in; it is gone at the test's end.
	CreateInstance func(t testing.TB) string
	// DeleteInstance makes an instance vanish the way an ephemeral one does,
	// behind the mounters' back.
	DeleteInstance func(t testing.TB, instance string)
	// ReadFile and WriteFile act inside the instance, as its root user.
	ReadFile  func(ctx context.Context, instance, path string) ([]byte, error)
	WriteFile func(ctx context.Context, instance, path string, data []byte) error
	// Transitions, when set, reports every attach and detach the
	// implementation made since the harness was set up, counted where they
	// happen (for Incus: in the updates sent to the server).
	Transitions func() map[Key]Transitions
	// Shift says whether Options.Shift works here; the shift test is
	// skipped otherwise.
	Shift bool
	// StressInstances and StressAliases size the stress test (5 and 10 when
	// zero); it makes 1000 concurrent calls over them.
	StressInstances, StressAliases int
}

// Run runs the conformance suite against h.
func Run(t *testing.T, h Harness) {
	tests := []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"SharedAlias", testSharedAlias},
		{"ReadOnly", testReadOnly},
		{"ReleaseOrder", testReleaseOrder},
		{"Conflicts", testConflicts},
		{"Refusals", testRefusals},
		{"Restart", testRestart},
		{"Vanished", testVanished},
		{"Cancelled", testCancelled},
		{"ConcurrentFirstAcquire", testConcurrentFirstAcquire},
		{"Stress", testStress},
		{"Shift", testShift},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, h)
		})
	}
}

func ctxFor(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// root returns a fresh allowed root, readable by unprivileged instances.
func root(t testing.TB) string {
	d := t.TempDir()
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// sourceDir makes dir under parent holding file "hello" with content.
func sourceDir(t testing.TB, parent, name, content string) string {
	t.Helper()
	d := filepath.Join(parent, name)
	if err := os.MkdirAll(d, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o777); err != nil { // writable by the instance's root, mapped or not
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "hello"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

func holders(t testing.TB, m Mounter, instance, alias string) int {
	t.Helper()
	ms, err := m.Mounts(ctxFor(t), instance)
	if err != nil {
		t.Fatalf("Mounts(%s): %v", instance, err)
	}
	for _, mt := range ms {
		if mt.Alias == alias {
			return len(mt.Holders)
		}
	}
	return 0
}

func visible(ctx context.Context, h Harness, instance, alias, want string) error {
	b, err := h.ReadFile(ctx, instance, mount.Path(alias)+"/hello")
	if err != nil {
		return err
	}
	if string(b) != want {
		return fmt.Errorf("read %q, want %q", b, want)
	}
	return nil
}

func transitions(h Harness, instance, alias string) (Transitions, bool) {
	if h.Transitions == nil {
		return Transitions{}, false
	}
	return h.Transitions()[Key{instance, mount.AliasHash(alias)}], true
}

func testSharedAlias(t *testing.T, h Harness) {
	is := is.New(t)
	ctx := ctxFor(t)
	r := root(t)
	src := sourceDir(t, r, "shared", "hi")
	m := h.New(t, []string{r})
	a, b := h.CreateInstance(t), h.CreateInstance(t)

	ha, err := m.Acquire(ctx, a, "isabelle/heaps", src, executor.MountOptions{})
	is.NoErr(err)
	hb, err := m.Acquire(ctx, b, "isabelle/heaps", src, executor.MountOptions{})
	is.NoErr(err)
	is.Equal(ha.Path, mount.Path("isabelle/heaps")) // same documented path in both
	is.Equal(hb.Path, ha.Path)
	is.True(ha.Holder != hb.Holder)

	// A file written on the host afterwards shows in both instances.
	is.NoErr(os.WriteFile(filepath.Join(src, "later"), []byte("fresh"), 0o644))
	for _, inst := range []string{a, b} {
		got, err := h.ReadFile(ctx, inst, ha.Path+"/later")
		is.NoErr(err)
		is.Equal(string(got), "fresh")
	}
	// And one written in an instance shows on the host and in the other.
	is.NoErr(h.WriteFile(ctx, a, ha.Path+"/from-a", []byte("A")))
	got, err := os.ReadFile(filepath.Join(src, "from-a"))
	is.NoErr(err)
	is.Equal(string(got), "A")
	got, err = h.ReadFile(ctx, b, hb.Path+"/from-a")
	is.NoErr(err)
	is.Equal(string(got), "A")

	ms, err := m.Mounts(ctx, a)
	is.NoErr(err)
	is.Equal(len(ms), 1)
	is.Equal(ms[0].Alias, "isabelle/heaps")
	is.Equal(ms[0].Path, ha.Path)
	is.Equal(ms[0].Source, src)
	is.Equal(len(ms[0].Holders), 1)
	is.Equal(ms[0].Holders[0].ID, ha.Holder)

	is.NoErr(m.Release(ctx, ha))
	is.True(visible(ctx, h, a, "isabelle/heaps", "hi") != nil) // gone from a
	is.NoErr(visible(ctx, h, b, "isabelle/heaps", "hi"))       // still in b
	is.NoErr(m.Release(ctx, hb))
	is.True(visible(ctx, h, b, "isabelle/heaps", "hi") != nil)
}

func testReadOnly(t *testing.T, h Harness) {
	is := is.New(t)
	ctx := ctxFor(t)
	r := root(t)
	ro := sourceDir(t, r, "ro", "ro")
	rw := sourceDir(t, r, "rw", "rw")
	m := h.New(t, []string{r})
	inst := h.CreateInstance(t)

	hro, err := m.Acquire(ctx, inst, "ro", ro, executor.MountOptions{ReadOnly: true})
	is.NoErr(err)
	hrw, err := m.Acquire(ctx, inst, "rw", rw, executor.MountOptions{})
	is.NoErr(err)

	is.NoErr(visible(ctx, h, inst, "ro", "ro"))
	err = h.WriteFile(ctx, inst, hro.Path+"/new", []byte("x"))
	is.True(err != nil) // read-only inside the instance
	t.Logf("write to the read-only mount: %v", err)
	_, err = os.Stat(filepath.Join(ro, "new"))
	is.True(errors.Is(err, os.ErrNotExist))

	// The same directory is writable through a read-write mount, so the
	// refusal above came from the mount and not from permissions.
	is.NoErr(h.WriteFile(ctx, inst, hrw.Path+"/new", []byte("x")))
	got, err := os.ReadFile(filepath.Join(rw, "new"))
	is.NoErr(err)
	is.Equal(string(got), "x")

	ms, err := m.Mounts(ctx, inst)
	is.NoErr(err)
	is.Equal(len(ms), 2)
	is.Equal(ms[0].Alias, "ro")
	is.True(ms[0].Options.ReadOnly)
	is.True(!ms[1].Options.ReadOnly)
	is.NoErr(m.Release(ctx, hro))
	is.NoErr(m.Release(ctx, hrw))
}

func testReleaseOrder(t *testing.T, h Harness) {
	ctx := ctxFor(t)
	r := root(t)
	src := sourceDir(t, r, "src", "order")
	other := sourceDir(t, r, "other", "other")
	m := h.New(t, []string{r})
	inst := h.CreateInstance(t)

	// A second alias stays attached throughout: releases of one alias must
	// not touch another.
	hother, err := m.Acquire(ctx, inst, "other", other, executor.MountOptions{})
	if err != nil {
		t.Fatal(err)
	}
	orders := [][]int{{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}}
	for n, order := range orders {
		t.Run(fmt.Sprint(order), func(t *testing.T) {
			is := is.New(t)
			alias := fmt.Sprintf("order-%d", n)
			var hs []mount.Handle
			for range 3 {
				hd, err := m.Acquire(ctx, inst, alias, src, executor.MountOptions{})
				is.NoErr(err)
				hs = append(hs, hd)
			}
			is.Equal(holders(t, m, inst, alias), 3)
			for i, k := range order {
				is.NoErr(visible(ctx, h, inst, alias, "order")) // attached while held
				is.NoErr(m.Release(ctx, hs[k]))
				is.Equal(holders(t, m, inst, alias), 2-i)
			}
			is.True(visible(ctx, h, inst, alias, "order") != nil) // detached at zero
			err := m.Release(ctx, hs[order[0]])
			is.True(errors.Is(err, mount.ErrNotHeld))
			if tr, ok := transitions(h, inst, alias); ok {
				is.Equal(tr, Transitions{Attached: 1, Detached: 1})
			}
		})
	}
	is := is.New(t)
	is.NoErr(visible(ctx, h, inst, "other", "other"))
	is.Equal(holders(t, m, inst, "other"), 1)
	is.NoErr(m.Release(ctx, hother))
}

func testConflicts(t *testing.T, h Harness) {
	is := is.New(t)
	ctx := ctxFor(t)
	r := root(t)
	src := sourceDir(t, r, "src", "x")
	src2 := sourceDir(t, r, "src2", "y")
	m := h.New(t, []string{r})
	inst := h.CreateInstance(t)

	hd, err := m.Acquire(ctx, inst, "a", src, executor.MountOptions{})
	is.NoErr(err)
	_, err = m.Acquire(ctx, inst, "a", src2, executor.MountOptions{})
	is.True(errors.Is(err, mount.ErrInUse)) // other source
	t.Log(err)
	_, err = m.Acquire(ctx, inst, "a", src, executor.MountOptions{ReadOnly: true})
	is.True(errors.Is(err, mount.ErrInUse)) // other options
	_, err = m.Acquire(ctx, inst, "a", src, executor.MountOptions{Propagation: "shared"})
	is.True(errors.Is(err, mount.ErrInUse))
	is.Equal(holders(t, m, inst, "a"), 1) // the refusals took no hold

	// The same source through another spelling is the same mount.
	hd2, err := m.Acquire(ctx, inst, "a", src+"/./", executor.MountOptions{})
	is.NoErr(err)
	is.Equal(holders(t, m, inst, "a"), 2)
	is.NoErr(m.Release(ctx, hd2))

	forged := hd
	forged.Holder = mount.NewHolderID()
	is.True(errors.Is(m.Release(ctx, forged), mount.ErrNotHeld))
	is.NoErr(m.Release(ctx, hd))
	is.True(errors.Is(m.Release(ctx, hd), mount.ErrNotHeld)) // twice

	for _, bad := range []struct {
		instance, alias string
		opts            executor.MountOptions
	}{
		{inst, "", executor.MountOptions{}},
		{inst, "a\x00b", executor.MountOptions{}},
		{inst, strings.Repeat("x", mount.MaxAliasLen+1), executor.MountOptions{}},
		{inst, "a", executor.MountOptions{Propagation: "bogus"}},
		{"", "a", executor.MountOptions{}},
		{"../etc", "a", executor.MountOptions{}},
	} {
		_, err := m.Acquire(ctx, bad.instance, bad.alias, src, bad.opts)
		is.True(errors.Is(err, mount.ErrInvalid))
	}
	is.True(errors.Is(m.Release(ctx, mount.Handle{}), mount.ErrInvalid))

	missing := "gone-" + strings.ToLower(mount.NewHolderID())
	_, err = m.Acquire(ctx, missing, "a", src, executor.MountOptions{})
	is.True(errors.Is(err, mount.ErrNotFound))
	_, err = m.Mounts(ctx, missing)
	is.True(errors.Is(err, mount.ErrNotFound))

	ms, err := m.Mounts(ctx, inst)
	is.NoErr(err)
	is.Equal(len(ms), 0)
}

func testRefusals(t *testing.T, h Harness) {
	ctx := ctxFor(t)
	r := root(t)
	outside := root(t)
	secret := sourceDir(t, outside, "secret", "secret")
	inside := sourceDir(t, r, "inside", "inside")
	mustSymlink := func(target, link string) string {
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		return link
	}
	escape := mustSymlink(secret, filepath.Join(r, "escape"))
	relEscape := mustSymlink("../"+filepath.Base(outside)+"/secret", filepath.Join(r, "rel-escape"))
	_ = os.MkdirAll(filepath.Join(r, "deep"), 0o755)
	chain := mustSymlink(filepath.Join(r, "escape"), filepath.Join(r, "deep", "chain"))
	_ = mustSymlink(outside, filepath.Join(r, "dirlink"))
	if err := os.WriteFile(filepath.Join(r, "file"), []byte("f"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := h.New(t, []string{r})
	inst := h.CreateInstance(t)

	for _, tc := range []struct{ name, source string }{
		{"relative", "inside"},
		{"empty", ""},
		{"outside", secret},
		{"dotdot", filepath.Join(r, "..", filepath.Base(outside), "secret")},
		{"dotdot-unclean", r + "/../" + filepath.Base(outside) + "/secret"},
		{"symlink-escape", escape},
		{"relative-symlink-escape", relEscape},
		{"symlink-chain", chain},
		{"through-dir-symlink", filepath.Join(r, "dirlink", "secret")},
		{"missing", filepath.Join(r, "missing")},
		{"file", filepath.Join(r, "file")},
		{"root-of-host", "/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			_, err := m.Acquire(ctx, inst, "refused-"+tc.name, tc.source, executor.MountOptions{})
			is.True(errors.Is(err, mount.ErrNotAllowed))
			t.Log(err)
		})
	}
	is := is.New(t)
	ms, err := m.Mounts(ctx, inst)
	is.NoErr(err)
	is.Equal(len(ms), 0) // nothing attached

	// A symlink that stays inside the root is fine, and the mount records
	// where it led.
	link := mustSymlink(inside, filepath.Join(r, "link"))
	hd, err := m.Acquire(ctx, inst, "linked", link, executor.MountOptions{})
	is.NoErr(err)
	is.NoErr(visible(ctx, h, inst, "linked", "inside"))
	ms, err = m.Mounts(ctx, inst)
	is.NoErr(err)
	is.Equal(len(ms), 1)
	is.Equal(ms[0].Source, inside)
	// The allowed root itself may be mounted.
	hr, err := m.Acquire(ctx, inst, "root", r, executor.MountOptions{ReadOnly: true})
	is.NoErr(err)
	is.NoErr(m.Release(ctx, hr))
	is.NoErr(m.Release(ctx, hd))
}

func testRestart(t *testing.T, h Harness) {
	is := is.New(t)
	ctx := ctxFor(t)
	r := root(t)
	src := sourceDir(t, r, "src", "kept")
	inst := h.CreateInstance(t)

	first := h.New(t, []string{r})
	h1, err := first.Acquire(ctx, inst, "kept", src, executor.MountOptions{ReadOnly: true})
	is.NoErr(err)
	h2, err := first.Acquire(ctx, inst, "kept", src, executor.MountOptions{ReadOnly: true})
	is.NoErr(err)

	// A new manager, as after the host process restarted, finds the holds.
	second := h.New(t, []string{r})
	ms, err := second.Mounts(ctx, inst)
	is.NoErr(err)
	is.Equal(len(ms), 1)
	is.Equal(ms[0].Alias, "kept")
	is.True(ms[0].Options.ReadOnly)
	is.Equal(len(ms[0].Holders), 2)
	ids := []string{ms[0].Holders[0].ID, ms[0].Holders[1].ID}
	is.True(slices.Contains(ids, h1.Holder) && slices.Contains(ids, h2.Holder))

	// It shares the existing mount instead of attaching it a second time,
	h3, err := second.Acquire(ctx, inst, "kept", src, executor.MountOptions{ReadOnly: true})
	is.NoErr(err)
	is.Equal(holders(t, second, inst, "kept"), 3)
	if tr, ok := transitions(h, inst, "kept"); ok {
		is.Equal(tr, Transitions{Attached: 1})
	}
	// releases the old process's handles, and detaches at the last one.
	is.NoErr(second.Release(ctx, h1))
	is.NoErr(second.Release(ctx, h3))
	is.NoErr(visible(ctx, h, inst, "kept", "kept"))
	is.NoErr(second.Release(ctx, h2))
	is.True(visible(ctx, h, inst, "kept", "kept") != nil)
	is.True(errors.Is(first.Release(ctx, h2), mount.ErrNotHeld)) // the old one agrees
	if tr, ok := transitions(h, inst, "kept"); ok {
		is.Equal(tr, Transitions{Attached: 1, Detached: 1})
	}
}

func testVanished(t *testing.T, h Harness) {
	is := is.New(t)
	ctx := ctxFor(t)
	r := root(t)
	src := sourceDir(t, r, "src", "v")
	m := h.New(t, []string{r})
	inst := h.CreateInstance(t)
	hd, err := m.Acquire(ctx, inst, "v", src, executor.MountOptions{})
	is.NoErr(err)
	h.DeleteInstance(t, inst)

	is.NoErr(m.Release(ctx, hd)) // the hold went with the instance
	_, err = m.Mounts(ctx, inst)
	is.True(errors.Is(err, mount.ErrNotFound))
	_, err = m.Acquire(ctx, inst, "v", src, executor.MountOptions{})
	is.True(errors.Is(err, mount.ErrNotFound))
	_, err = os.Stat(filepath.Join(src, "hello")) // the host's files are untouched
	is.NoErr(err)
}

func testCancelled(t *testing.T, h Harness) {
	is := is.New(t)
	r := root(t)
	src := sourceDir(t, r, "src", "c")
	m := h.New(t, []string{r})
	inst := h.CreateInstance(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := m.Acquire(ctx, inst, "c", src, executor.MountOptions{})
	is.True(errors.Is(err, context.Canceled))
	ms, err := m.Mounts(ctxFor(t), inst)
	is.NoErr(err)
	is.Equal(len(ms), 0)

	// A release that cannot start keeps the hold.
	hd, err := m.Acquire(ctxFor(t), inst, "c", src, executor.MountOptions{})
	is.NoErr(err)
	is.True(errors.Is(m.Release(ctx, hd), context.Canceled))
	is.Equal(holders(t, m, inst, "c"), 1)
	is.NoErr(m.Release(ctxFor(t), hd))
	is.Equal(holders(t, m, inst, "c"), 0)
}

func testConcurrentFirstAcquire(t *testing.T, h Harness) {
	is := is.New(t)
	ctx := ctxFor(t)
	r := root(t)
	src := sourceDir(t, r, "src", "many")
	m := h.New(t, []string{r})
	inst := h.CreateInstance(t)

	const n = 50
	handles := make([]mount.Handle, n)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { handles[i], errs[i] = m.Acquire(ctx, inst, "many", src, executor.MountOptions{}) })
	}
	wg.Wait()
	is.NoErr(errors.Join(errs...))
	is.Equal(holders(t, m, inst, "many"), n)
	is.NoErr(visible(ctx, h, inst, "many", "many"))
	if tr, ok := transitions(h, inst, "many"); ok {
		is.Equal(tr, Transitions{Attached: 1}) // one attach for all first acquires
	}
	for i := range n {
		wg.Go(func() { errs[i] = m.Release(ctx, handles[i]) })
	}
	wg.Wait()
	is.NoErr(errors.Join(errs...))
	is.Equal(holders(t, m, inst, "many"), 0)
	is.True(visible(ctx, h, inst, "many", "many") != nil)
	if tr, ok := transitions(h, inst, "many"); ok {
		is.Equal(tr, Transitions{Attached: 1, Detached: 1})
	}
}

// testStress makes 1000 concurrent calls over instances × aliases after a
// concurrent warm-up that holds every alias 9 times. In the 1000, the first
// half of the keys lose all 9 holds (each must be detached exactly once),
// the second half lose 8 and gain 23 (never reaching zero, so never
// detached nor attached again). Then the mounts must match the holds.
func testStress(t *testing.T, h Harness) {
	is := is.New(t)
	ctx := ctxFor(t)
	ni, na := h.StressInstances, h.StressAliases
	if ni == 0 {
		ni = 5
	}
	if na == 0 {
		na = 10
	}
	r := root(t)
	m := h.New(t, []string{r})
	instances := make([]string, ni)
	var wg sync.WaitGroup
	for i := range instances {
		wg.Go(func() { instances[i] = h.CreateInstance(t) })
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	type key struct{ inst, alias, src string }
	keys := make([]key, ni*na)
	for k := range keys {
		alias := fmt.Sprintf("stress/%d", k/ni)
		keys[k] = key{instances[k%ni], alias, sourceDir(t, r, fmt.Sprintf("s%d", k/ni), alias)}
	}
	half := len(keys) / 2

	const warm = 9
	held := make([][]mount.Handle, len(keys))
	var mu sync.Mutex
	var failures atomic.Int64
	fail := func(err error) {
		if failures.Add(1) <= 5 {
			t.Error(err)
		}
	}
	acquire := func(k int) {
		hd, err := m.Acquire(ctx, keys[k].inst, keys[k].alias, keys[k].src, executor.MountOptions{})
		if err != nil {
			fail(err)
			return
		}
		mu.Lock()
		held[k] = append(held[k], hd)
		mu.Unlock()
	}
	for k := range keys {
		for range warm {
			wg.Go(func() { acquire(k) })
		}
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// The 1000 calls: releases of warm-up handles and new acquires, all in
	// flight at once, in no particular order.
	var calls []func()
	for k := range keys {
		drop := warm
		if k >= half {
			drop = warm - 1
		}
		for _, hd := range held[k][:drop] {
			calls = append(calls, func() {
				if err := m.Release(ctx, hd); err != nil {
					fail(err)
				}
			})
		}
		held[k] = held[k][drop:]
	}
	for len(calls) < 1000 { // new acquires on the second half's keys
		k := half + len(calls)%(len(keys)-half)
		calls = append(calls, func() { acquire(k) })
	}
	start := make(chan struct{})
	for _, call := range calls {
		wg.Go(func() { <-start; call() })
	}
	close(start)
	wg.Wait()
	t.Logf("%d concurrent calls over %d instances × %d aliases", len(calls), ni, na)
	if t.Failed() {
		t.FailNow()
	}

	for k, kk := range keys {
		want := len(held[k])
		is.Equal(holders(t, m, kk.inst, kk.alias), want)
		if tr, ok := transitions(h, kk.inst, kk.alias); ok {
			wantTr := Transitions{Attached: 1}
			if want == 0 {
				wantTr.Detached = 1
			}
			if tr != wantTr {
				t.Errorf("%s %s: %+v, want %+v", kk.inst, kk.alias, tr, wantTr)
			}
		}
	}
	// The mounts are exactly the held keys.
	for _, inst := range instances {
		ms, err := m.Mounts(ctx, inst)
		is.NoErr(err)
		var got, want []string
		for _, mt := range ms {
			got = append(got, mt.Alias)
		}
		for k, kk := range keys {
			if kk.inst == inst && len(held[k]) > 0 {
				want = append(want, kk.alias)
			}
		}
		slices.Sort(want)
		is.Equal(got, want)
		// Visible exactly where held.
		for k, kk := range keys {
			if kk.inst != inst {
				continue
			}
			err := visible(ctx, h, inst, kk.alias, kk.alias)
			if (err == nil) != (len(held[k]) > 0) {
				t.Errorf("%s %s: visible=%v with %d holds", inst, kk.alias, err == nil, len(held[k]))
			}
		}
	}
	for k := range keys {
		for _, hd := range held[k] {
			wg.Go(func() {
				if err := m.Release(ctx, hd); err != nil {
					fail(err)
				}
			})
		}
	}
	wg.Wait()
}

func testShift(t *testing.T, h Harness) {
	if !h.Shift {
		t.Skip("Options.Shift is not supported by this implementation here")
	}
	is := is.New(t)
	ctx := ctxFor(t)
	r := root(t)
	src := filepath.Join(r, "private")
	is.NoErr(os.Mkdir(src, 0o700))
	is.NoErr(os.WriteFile(filepath.Join(src, "hello"), []byte("mine"), 0o600))
	m := h.New(t, []string{r})
	inst := h.CreateInstance(t)

	// Unshifted, the host's root-owned 0700 directory would belong to
	// nobody inside, unreadable: Acquire refuses it and names the source.
	_, err := m.Acquire(ctx, inst, "plain", src, executor.MountOptions{})
	is.True(errors.Is(err, mount.ErrUnreadable))
	is.True(strings.Contains(err.Error(), src))
	// Shifted, the instance's root owns it.
	shifted, err := m.Acquire(ctx, inst, "shifted", src, executor.MountOptions{Shift: true})
	is.NoErr(err)
	is.NoErr(visible(ctx, h, inst, "shifted", "mine"))
	is.NoErr(h.WriteFile(ctx, inst, shifted.Path+"/back", []byte("b")))
	fi, err := os.Stat(filepath.Join(src, "back"))
	is.NoErr(err)
	is.Equal(fileUID(fi), 0) // written as the host's root
	is.NoErr(m.Release(ctx, shifted))
}

func fileUID(fi os.FileInfo) int {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid)
	}
	return -1
}
