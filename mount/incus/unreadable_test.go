package incus_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/incusexec/incusexec/executor"
	mountincus "github.com/incusexec/incusexec/mount/incus"

	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/incusexec/incusexec/mount"
	"github.com/matryer/is"
)

// TestUnreadableSourceRefused: a root-owned 0700 directory attached to an
// unprivileged container without Shift would show as nobody's and refuse
// every access inside; Acquire refuses it, naming the source, the reason and
// the remedies, and attaches nothing. Readable by others, owned by an id the
// container maps, or shifted, the same directory is attached and readable.
func TestUnreadableSourceRefused(t *testing.T) {
	is := is.New(t)
	d := incustest.Shared(t)
	d.BusyboxImage(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	inst := createInstance(t, d)
	root := t.TempDir()
	is.NoErr(os.Chmod(root, 0o755))
	src := filepath.Join(root, "private")
	is.NoErr(os.Mkdir(src, 0o700))
	is.NoErr(os.WriteFile(filepath.Join(src, "hello"), []byte("mine"), 0o644))
	m, err := mountincus.New(mountincus.Config{Client: d.Client, AllowedRoots: []string{root}})
	is.NoErr(err)

	_, err = m.Acquire(ctx, inst, "private", src, executor.MountOptions{})
	is.True(errors.Is(err, mount.ErrUnreadable))
	for _, want := range []string{src, "unprivileged", "0700", "Shift", "chmod o+rx"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	ms, err := m.Mounts(ctx, inst)
	is.NoErr(err)
	is.Equal(len(ms), 0) // nothing attached
	got, _, err := d.Client.GetInstance(inst)
	is.NoErr(err)
	for name := range got.Devices {
		is.True(!strings.HasPrefix(name, mountincus.DevicePrefix))
	}

	read := func(alias string, opts executor.MountOptions) {
		t.Helper()
		h, err := m.Acquire(ctx, inst, alias, src, opts)
		is.NoErr(err)
		out, err := execIn(ctx, d.Client, inst, "cat", h.Path+"/hello")
		is.NoErr(err)
		is.Equal(out, "mine")
		is.NoErr(m.Release(ctx, h))
	}
	// Shifted: the container's root owns it.
	read("shifted", executor.MountOptions{Shift: true})
	// Owned by the container's mapped root.
	var idmap []struct {
		Isuid, Isgid     bool
		Hostid, Maprange int64
		Nsid             int64
	}
	is.NoErr(json.Unmarshal([]byte(got.Config["volatile.idmap.current"]), &idmap))
	var uid, gid int64 = -1, -1
	for _, e := range idmap {
		if e.Nsid == 0 && e.Isuid {
			uid = e.Hostid
		}
		if e.Nsid == 0 && e.Isgid {
			gid = e.Hostid
		}
	}
	is.True(uid > 0 && gid > 0)
	is.NoErr(os.Chown(src, int(uid), int(gid)))
	read("mapped-owner", executor.MountOptions{})
	// Root-owned again, readable by others.
	is.NoErr(os.Chown(src, 0, 0))
	is.NoErr(os.Chmod(src, 0o755))
	read("others", executor.MountOptions{})
}
