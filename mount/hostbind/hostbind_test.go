package hostbind_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/mount"
	"github.com/incusexec/incusexec/mount/hostbind"
	"github.com/incusexec/incusexec/mount/mounttest"
	"github.com/matryer/is"
)

func needRoot(t testing.TB) {
	if os.Geteuid() != 0 {
		t.Skip("bind mounts need root")
	}
}

var instanceSeq atomic.Int64

// harness runs the suite with instances that are directories under one
// root; "inside the instance" is the instance's data directory seen as /data.
func harness(t *testing.T) mounttest.Harness {
	needRoot(t)
	root := t.TempDir()
	admin, err := hostbind.New(hostbind.Config{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	tr := map[mounttest.Key]mounttest.Transitions{}
	record := func(instance, hash string, attached bool) {
		mu.Lock()
		defer mu.Unlock()
		k := mounttest.Key{Instance: instance, Hash: hash}
		v := tr[k]
		if attached {
			v.Attached++
		} else {
			v.Detached++
		}
		tr[k] = v
	}
	inside := func(instance, p string) (string, error) {
		rel, ok := strings.CutPrefix(p, mount.DataDir+"/")
		if !ok || filepath.Clean(rel) != rel || strings.HasPrefix(rel, "..") {
			return "", errors.New("path outside /data: " + p)
		}
		return filepath.Join(admin.DataDir(instance), rel), nil
	}
	return mounttest.Harness{
		New: func(t testing.TB, roots []string) mounttest.Mounter {
			m, err := hostbind.New(hostbind.Config{Root: root, AllowedRoots: roots, Owner: "mounttest"})
			if err != nil {
				t.Fatal(err)
			}
			hostbind.SetTransitionHook(m, record)
			return m
		},
		CreateInstance: func(t testing.TB) string {
			name := "inst" + strings.ToLower(mount.NewHolderID()[:6]) + "-" + string(rune('a'+instanceSeq.Add(1)%26))
			if _, err := admin.CreateInstance(name); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := admin.RemoveInstance(context.Background(), name); err != nil {
					t.Error(err)
				}
			})
			return name
		},
		DeleteInstance: func(t testing.TB, name string) {
			if err := admin.RemoveInstance(context.Background(), name); err != nil {
				t.Fatal(err)
			}
		},
		ReadFile: func(_ context.Context, instance, p string) ([]byte, error) {
			hp, err := inside(instance, p)
			if err != nil {
				return nil, err
			}
			return os.ReadFile(hp)
		},
		WriteFile: func(_ context.Context, instance, p string, data []byte) error {
			hp, err := inside(instance, p)
			if err != nil {
				return err
			}
			return os.WriteFile(hp, data, 0o644)
		},
		Transitions: func() map[mounttest.Key]mounttest.Transitions {
			mu.Lock()
			defer mu.Unlock()
			out := map[mounttest.Key]mounttest.Transitions{}
			for k, v := range tr {
				out[k] = v
			}
			return out
		},
	}
}

// TestConformance runs the mounttest suite against bind mounts.
func TestConformance(t *testing.T) { mounttest.Run(t, harness(t)) }

// TestShiftUnsupported: hostbind cannot map owners, and says so.
func TestShiftUnsupported(t *testing.T) {
	needRoot(t)
	is := is.New(t)
	src := t.TempDir()
	m, err := hostbind.New(hostbind.Config{Root: t.TempDir(), AllowedRoots: []string{src}})
	is.NoErr(err)
	_, err = m.CreateInstance("a")
	is.NoErr(err)
	_, err = m.Acquire(context.Background(), "a", "x", src, executor.MountOptions{Shift: true})
	is.True(errors.Is(err, mount.ErrInvalid))
	is.True(errors.Is(err, errors.ErrUnsupported))
}

// TestRemoveInstanceKeepsSources: removing an instance with mounts in place
// unmounts them first and never deletes through them.
func TestRemoveInstanceKeepsSources(t *testing.T) {
	needRoot(t)
	is := is.New(t)
	ctx := context.Background()
	src := t.TempDir()
	is.NoErr(os.WriteFile(filepath.Join(src, "precious"), []byte("keep"), 0o644))
	m, err := hostbind.New(hostbind.Config{Root: t.TempDir(), AllowedRoots: []string{src}})
	is.NoErr(err)
	data, err := m.CreateInstance("a")
	is.NoErr(err)
	h, err := m.Acquire(ctx, "a", "x", src, executor.MountOptions{})
	is.NoErr(err)
	_, err = m.Acquire(ctx, "a", "y", src, executor.MountOptions{ReadOnly: true})
	is.NoErr(err)
	is.NoErr(os.WriteFile(filepath.Join(data, "task-output"), []byte("o"), 0o644))
	is.NoErr(m.RemoveInstance(ctx, "a"))
	b, err := os.ReadFile(filepath.Join(src, "precious"))
	is.NoErr(err)
	is.Equal(string(b), "keep")
	_, err = os.Stat(m.InstanceDir("a"))
	is.True(errors.Is(err, os.ErrNotExist))
	is.NoErr(m.Release(ctx, h)) // went with the instance
	is.NoErr(m.RemoveInstance(ctx, "a"))
}

// TestRebootDropsRecords: holds recorded for mounts that no longer exist
// (the host rebooted) are forgotten; the alias mounts afresh.
func TestRebootDropsRecords(t *testing.T) {
	needRoot(t)
	is := is.New(t)
	ctx := context.Background()
	src := t.TempDir()
	root := t.TempDir()
	m, err := hostbind.New(hostbind.Config{Root: root, AllowedRoots: []string{src}})
	is.NoErr(err)
	data, err := m.CreateInstance("a")
	is.NoErr(err)
	_, err = m.Acquire(ctx, "a", "x", src, executor.MountOptions{})
	is.NoErr(err)
	target := filepath.Join(data, mount.AliasHash("x"))
	is.NoErr(unmountForTest(target)) // what a reboot does

	m2, err := hostbind.New(hostbind.Config{Root: root, AllowedRoots: []string{src}})
	is.NoErr(err)
	ms, err := m2.Mounts(ctx, "a")
	is.NoErr(err)
	is.Equal(len(ms), 0)
	h, err := m2.Acquire(ctx, "a", "x", src, executor.MountOptions{})
	is.NoErr(err)
	is.NoErr(os.WriteFile(filepath.Join(src, "f"), []byte("z"), 0o644))
	b, err := os.ReadFile(filepath.Join(target, "f"))
	is.NoErr(err)
	is.Equal(string(b), "z")
	is.NoErr(m2.Release(ctx, h))
	is.NoErr(m2.RemoveInstance(ctx, "a"))
}
