package incus_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/incusexec/incusexec/executor"
	mountincus "github.com/incusexec/incusexec/mount/incus"

	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/incusexec/incusexec/mount"
	"github.com/incusexec/incusexec/mount/mounttest"
	incus "github.com/lxc/incus/v6/client"
	"github.com/lxc/incus/v6/shared/api"
	"github.com/matryer/is"
)

func TestMain(m *testing.M) { incustest.Main(m) }

// recorder wraps the Incus client and counts, from the updates that
// succeed, how often each device of ours is attached and detached: the
// base of each update is the read whose ETag it carries.
type recorder struct {
	mountincus.Client
	updates atomic.Int64

	mu    sync.Mutex
	reads map[string]map[string]bool // instance+ETag -> our devices
	tr    map[mounttest.Key]mounttest.Transitions
	// beforeUpdate, when set, runs before each update is sent.
	beforeUpdate func(instance string)
}

func newRecorder(c mountincus.Client) *recorder {
	return &recorder{Client: c, reads: map[string]map[string]bool{}, tr: map[mounttest.Key]mounttest.Transitions{}}
}

func ours(devices map[string]map[string]string) map[string]bool {
	set := map[string]bool{}
	for name := range devices {
		if strings.HasPrefix(name, mountincus.DevicePrefix) {
			set[name] = true
		}
	}
	return set
}

func (r *recorder) GetInstance(name string) (*api.Instance, string, error) {
	inst, etag, err := r.Client.GetInstance(name)
	if err == nil {
		r.mu.Lock()
		r.reads[name+"\x00"+etag] = ours(inst.Devices)
		r.mu.Unlock()
	}
	return inst, etag, err
}

func (r *recorder) UpdateInstance(name string, put api.InstancePut, etag string) (incus.Operation, error) {
	r.mu.Lock()
	hook := r.beforeUpdate
	r.mu.Unlock()
	if hook != nil {
		hook(name)
	}
	r.updates.Add(1)
	op, err := r.Client.UpdateInstance(name, put, etag)
	if err != nil {
		return op, err
	}
	if op.Wait() != nil { // the caller's wait sees the same result
		return op, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	before, after := r.reads[name+"\x00"+etag], ours(put.Devices)
	for dev := range after {
		if !before[dev] {
			k := mounttest.Key{Instance: name, Hash: strings.TrimPrefix(dev, mountincus.DevicePrefix)}
			t := r.tr[k]
			t.Attached++
			r.tr[k] = t
		}
	}
	for dev := range before {
		if !after[dev] {
			k := mounttest.Key{Instance: name, Hash: strings.TrimPrefix(dev, mountincus.DevicePrefix)}
			t := r.tr[k]
			t.Detached++
			r.tr[k] = t
		}
	}
	return op, nil
}

func (r *recorder) transitions() map[mounttest.Key]mounttest.Transitions {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[mounttest.Key]mounttest.Transitions, len(r.tr))
	for k, v := range r.tr {
		out[k] = v
	}
	return out
}

// incusHarness runs the suite on the test binary's private daemon with
// ephemeral busybox containers.
func incusHarness(t *testing.T) (mounttest.Harness, *recorder, *incustest.Daemon) {
	d := incustest.Shared(t)
	d.BusyboxImage(t)
	rec := newRecorder(d.Client)
	return mounttest.Harness{
		New: func(t testing.TB, roots []string) mounttest.Mounter {
			m, err := mountincus.New(mountincus.Config{Client: rec, AllowedRoots: roots, Owner: "mounttest"})
			if err != nil {
				t.Fatal(err)
			}
			return m
		},
		CreateInstance: func(t testing.TB) string { return createInstance(t, d) },
		DeleteInstance: func(t testing.TB, name string) { removeInstance(t, d.Client, name) },
		ReadFile: func(ctx context.Context, inst, path string) ([]byte, error) {
			out, err := execIn(ctx, d.Client, inst, "cat", path)
			return []byte(out), err
		},
		WriteFile: func(ctx context.Context, inst, path string, data []byte) error {
			_, err := execIn(ctx, d.Client, inst, "sh", "-c", `printf %s "$1" > "$2"`, "sh", string(data), path)
			return err
		},
		Transitions: rec.transitions,
		Shift:       true,
	}, rec, d
}

// TestConformance runs the mounttest suite against Incus.
func TestConformance(t *testing.T) {
	h, rec, _ := incusHarness(t)
	t.Cleanup(func() { t.Logf("%d instance updates sent", rec.updates.Load()) })
	mounttest.Run(t, h)
}

// createInstance starts an ephemeral busybox container, gone at the test's end.
func createInstance(t testing.TB, d *incustest.Daemon) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	name := incustest.UniqueName("mnt-")
	op, err := d.Client.CreateInstance(api.InstancesPost{
		Name:        name,
		Source:      api.InstanceSource{Type: "image", Alias: incustest.BusyboxAlias},
		Start:       true,
		InstancePut: api.InstancePut{Ephemeral: true},
	})
	if err == nil {
		err = op.WaitContext(ctx)
	}
	if err != nil {
		t.Fatalf("create instance %s: %v", name, err)
	}
	t.Cleanup(func() { removeInstance(t, d.Client, name) })
	return name
}

// removeInstance stops an ephemeral instance, which deletes it, and waits
// until it is gone.
func removeInstance(t testing.TB, c incus.InstanceServer, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	op, err := c.UpdateInstanceState(name, api.InstanceStatePut{Action: "stop", Force: true}, "")
	if err == nil {
		err = op.WaitContext(ctx)
	}
	if err != nil && !api.StatusErrorCheck(err, http.StatusNotFound) && !strings.Contains(err.Error(), "not found") {
		t.Errorf("stop %s: %v", name, err)
	}
	for {
		_, _, err := c.GetInstance(name)
		if api.StatusErrorCheck(err, http.StatusNotFound) {
			return
		}
		select {
		case <-ctx.Done():
			t.Errorf("instance %s still there after stopping (last error %v)", name, err)
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// execIn runs argv in the instance and returns its standard output; a
// non-zero exit is an error carrying its standard error.
func execIn(ctx context.Context, c incus.InstanceServer, name string, argv ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	done := make(chan bool)
	op, err := c.ExecInstance(name, api.InstanceExecPost{Command: argv, WaitForWS: true},
		&incus.InstanceExecArgs{Stdout: &stdout, Stderr: &stderr, DataDone: done})
	if err != nil {
		return "", err
	}
	if err := op.WaitContext(ctx); err != nil {
		return "", err
	}
	<-done
	code, _ := op.Get().Metadata["return"].(float64)
	if code != 0 {
		return stdout.String(), fmt.Errorf("%q exited %d: %s", argv, int(code), strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// TestConcurrentWriterKept: another process edits the instance between the
// manager's read and its write; the manager's write is refused (412),
// retried on the fresh state, and the other edit survives.
func TestConcurrentWriterKept(t *testing.T) {
	_, rec, d := incusHarness(t)
	ctx := context.Background()
	inst := createInstance(t, d)
	root := t.TempDir()
	var once sync.Once
	rec.mu.Lock()
	rec.beforeUpdate = func(name string) {
		once.Do(func() {
			i, etag, err := d.Client.GetInstance(name)
			if err != nil {
				t.Error(err)
				return
			}
			put := i.Writable()
			put.Config["user.other.process"] = "was here"
			op, err := d.Client.UpdateInstance(name, put, etag)
			if err == nil {
				err = op.Wait()
			}
			if err != nil {
				t.Error(err)
			}
		})
	}
	rec.mu.Unlock()
	m, err := mountincus.New(mountincus.Config{Client: rec, AllowedRoots: []string{root}})
	if err != nil {
		t.Fatal(err)
	}
	before := rec.updates.Load()
	h, err := m.Acquire(ctx, inst, "contended", root, executor.MountOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n := rec.updates.Load() - before; n != 2 {
		t.Errorf("%d updates sent, want 2 (refused, then retried)", n)
	}
	i, _, err := d.Client.GetInstance(inst)
	if err != nil {
		t.Fatal(err)
	}
	if i.Config["user.other.process"] != "was here" {
		t.Errorf("the other process's edit was lost: %v", i.Config)
	}
	if _, ok := i.Devices[mountincus.DeviceName("contended")]; !ok {
		t.Errorf("device missing: %v", i.Devices)
	}
	if err := m.Release(ctx, h); err != nil {
		t.Fatal(err)
	}
}

// TestForeignDevices: a device this package did not add, under its device
// name or at its path, is left alone and the acquire refused.
func TestForeignDevices(t *testing.T) {
	_, rec, d := incusHarness(t)
	ctx := context.Background()
	inst := createInstance(t, d)
	root := t.TempDir()
	i, etag, err := d.Client.GetInstance(inst)
	if err != nil {
		t.Fatal(err)
	}
	put := i.Writable()
	put.Devices[mountincus.DeviceName("named")] = map[string]string{"type": "disk", "source": root, "path": "/mnt/named"}
	put.Devices["by-hand"] = map[string]string{"type": "disk", "source": root, "path": mount.Path("placed")}
	op, err := d.Client.UpdateInstance(inst, put, etag)
	if err == nil {
		err = op.Wait()
	}
	if err != nil {
		t.Fatal(err)
	}
	m, err := mountincus.New(mountincus.Config{Client: rec, AllowedRoots: []string{root}})
	if err != nil {
		t.Fatal(err)
	}
	for _, alias := range []string{"named", "placed"} {
		_, err := m.Acquire(ctx, inst, alias, root, executor.MountOptions{})
		if !errors.Is(err, mount.ErrInUse) {
			t.Errorf("acquire %s: %v, want ErrInUse", alias, err)
		}
		t.Log(err)
	}
	after, _, err := d.Client.GetInstance(inst)
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Devices) != 2 || !maps.EqualFunc(after.Devices, put.Devices, maps.Equal) {
		t.Errorf("devices changed: %v", after.Devices)
	}
	ms, err := m.Mounts(ctx, inst)
	if err != nil || len(ms) != 0 {
		t.Errorf("Mounts = %v, %v; want none", ms, err)
	}
}

// TestServerRecord pins the documented server-side form of a mount.
func TestServerRecord(t *testing.T) {
	is := is.New(t)
	_, rec, d := incusHarness(t)
	ctx := context.Background()
	inst := createInstance(t, d)
	root := t.TempDir()
	m, err := mountincus.New(mountincus.Config{Client: rec, AllowedRoots: []string{root}, Owner: "gateway-1"})
	is.NoErr(err)
	h, err := m.Acquire(ctx, inst, "isabelle/heaps", root, executor.MountOptions{ReadOnly: true, Propagation: "rslave"})
	is.NoErr(err)
	i, _, err := d.Client.GetInstance(inst)
	is.NoErr(err)
	is.Equal(i.Devices["incusexec-mount-c2a7ae348e873efadc082b36d25548af"], map[string]string{
		"type": "disk", "source": root, "path": "/data/c2a7ae348e873efadc082b36d25548af",
		"readonly": "true", "propagation": "rslave",
	})
	is.Equal(i.Config["user.incusexec.mount.c2a7ae348e873efadc082b36d25548af"],
		`{"alias":"isabelle/heaps","holders":{"`+h.Holder+`":"gateway-1"}}`)
	is.NoErr(m.Release(ctx, h))
	i, _, err = d.Client.GetInstance(inst)
	is.NoErr(err)
	is.Equal(len(i.Devices), 0)
	_, ok := i.Config["user.incusexec.mount.c2a7ae348e873efadc082b36d25548af"]
	is.True(!ok)
}

// TestHostClientUnharmed: the manager shares the host's client; using it
// must leave the client working for the host (binding a context with the
// v6 client's WithContext would hand a cancelled context to every later
// call of the host).
func TestHostClientUnharmed(t *testing.T) {
	is := is.New(t)
	d := incustest.Shared(t)
	d.BusyboxImage(t)
	inst := createInstance(t, d)
	root := t.TempDir()
	m, err := mountincus.New(mountincus.Config{Client: d.Client, AllowedRoots: []string{root}})
	is.NoErr(err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	h, err := m.Acquire(ctx, inst, "shared-client", root, executor.MountOptions{})
	is.NoErr(err)
	_, err = m.Mounts(ctx, inst)
	is.NoErr(err)
	is.NoErr(m.Release(ctx, h))
	cancel()
	_, _, err = d.Client.GetServer()
	is.NoErr(err) // the host's client still works
}

// TestSwappedSourceRefused plays the race the package documentation
// describes: after the source was checked and before the server mounts it,
// a task swaps it for a symlink leading outside the allowed root. The
// server follows the symlink; Acquire notices afterwards, detaches, and
// refuses.
func TestSwappedSourceRefused(t *testing.T) {
	is := is.New(t)
	_, rec, d := incusHarness(t)
	ctx := context.Background()
	inst := createInstance(t, d)
	root, outside := t.TempDir(), t.TempDir()
	src := filepath.Join(root, "shared")
	is.NoErr(os.Mkdir(src, 0o755))
	var once sync.Once
	rec.mu.Lock()
	rec.beforeUpdate = func(string) {
		once.Do(func() {
			if err := os.Rename(src, src+".moved"); err != nil {
				t.Error(err)
			}
			if err := os.Symlink(outside, src); err != nil {
				t.Error(err)
			}
		})
	}
	rec.mu.Unlock()
	m, err := mountincus.New(mountincus.Config{Client: rec, AllowedRoots: []string{root}})
	is.NoErr(err)
	_, err = m.Acquire(ctx, inst, "swapped", src, executor.MountOptions{})
	is.True(errors.Is(err, mount.ErrNotAllowed))
	t.Log(err)
	i, _, err := d.Client.GetInstance(inst)
	is.NoErr(err)
	is.Equal(len(i.Devices), 0) // detached again
	tr := rec.transitions()[mounttest.Key{Instance: inst, Hash: mount.AliasHash("swapped")}]
	is.Equal(tr, mounttest.Transitions{Attached: 1, Detached: 1})
}
