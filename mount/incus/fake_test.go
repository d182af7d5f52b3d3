package incus_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/incusexec/incusexec/executor"
	mountincus "github.com/incusexec/incusexec/mount/incus"

	"github.com/incusexec/incusexec/mount"
	incus "github.com/lxc/incus/v6/client"
	"github.com/lxc/incus/v6/shared/api"
	"github.com/matryer/is"
)

// fakeServer is an in-memory Incus holding instances with ETags, for the
// failure paths a real daemon does not produce on demand: updates that
// hang, and attach failures in the middle of a batch.
type fakeServer struct {
	mu      sync.Mutex
	insts   map[string]*api.Instance
	updates int
	// onUpdate, when set, decides the fate of the n-th update (from 1): an
	// error fails it, unchanged, and the channel, when non-nil, holds back
	// its completion until closed.
	onUpdate func(n int, put api.InstancePut) (<-chan struct{}, error)
}

func newFakeServer(names ...string) *fakeServer {
	s := &fakeServer{insts: map[string]*api.Instance{}}
	for _, n := range names {
		s.insts[n] = &api.Instance{Name: n, InstancePut: api.InstancePut{Config: map[string]string{}, Devices: map[string]map[string]string{}}}
	}
	return s
}

func etagOf(inst *api.Instance) string {
	b, _ := json.Marshal(inst.Writable())
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func cloneInstance(inst *api.Instance) *api.Instance {
	c := *inst
	c.Config = maps.Clone(inst.Config)
	c.Devices = map[string]map[string]string{}
	for k, v := range inst.Devices {
		c.Devices[k] = maps.Clone(v)
	}
	c.ExpandedDevices = c.Devices
	c.ExpandedConfig = c.Config
	return &c
}

func (s *fakeServer) GetInstance(name string) (*api.Instance, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	inst := s.insts[name]
	if inst == nil {
		return nil, "", api.StatusErrorf(http.StatusNotFound, "Instance not found")
	}
	return cloneInstance(inst), etagOf(inst), nil
}

func (s *fakeServer) UpdateInstance(name string, put api.InstancePut, etag string) (incus.Operation, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	inst := s.insts[name]
	if inst == nil {
		return nil, api.StatusErrorf(http.StatusNotFound, "Instance not found")
	}
	if etag != etagOf(inst) {
		return nil, api.StatusErrorf(http.StatusPreconditionFailed, "ETag doesn't match")
	}
	s.updates++
	var gate <-chan struct{}
	var err error
	if s.onUpdate != nil {
		gate, err = s.onUpdate(s.updates, put)
	}
	if err == nil {
		inst.InstancePut = put
		*inst = *cloneInstance(inst)
	}
	return &fakeOp{gate: gate, err: err}, nil
}

func (s *fakeServer) state(name string) (devices []string, keys []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for d := range s.insts[name].Devices {
		devices = append(devices, d)
	}
	for k := range s.insts[name].Config {
		if strings.HasPrefix(k, mountincus.ConfigPrefix) {
			keys = append(keys, k)
		}
	}
	return devices, keys
}

func (s *fakeServer) updateCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.updates
}

type fakeOp struct {
	incus.Operation // calling anything not overridden panics
	gate            <-chan struct{}
	err             error
}

func (o *fakeOp) WaitContext(ctx context.Context) error {
	if o.gate != nil {
		select {
		case <-o.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return o.err
}

func (o *fakeOp) Wait() error        { return o.WaitContext(context.Background()) }
func (o *fakeOp) Cancel() error      { return nil }
func (o *fakeOp) Get() api.Operation { return api.Operation{ID: "fake-op"} }

// waitFor polls cond: synchronisation with the manager's goroutines, not a
// measure of speed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func fakeManager(t *testing.T, s *fakeServer) (*mountincus.Manager, string) {
	root := t.TempDir()
	m, err := mountincus.New(mountincus.Config{Client: s, AllowedRoots: []string{root}})
	if err != nil {
		t.Fatal(err)
	}
	return m, root
}

// TestAbandonedAcquireIsUndone: a caller that gives up while its acquire
// is being written gets ctx's error, and the hold taken meanwhile is
// released again, so nothing is left attached for a handle nobody has.
func TestAbandonedAcquireIsUndone(t *testing.T) {
	is := is.New(t)
	s := newFakeServer("c1")
	gate := make(chan struct{})
	s.onUpdate = func(n int, _ api.InstancePut) (<-chan struct{}, error) {
		if n == 1 {
			return gate, nil
		}
		return nil, nil
	}
	m, root := fakeManager(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() {
		_, err := m.Acquire(ctx, "c1", "a", root, executor.MountOptions{})
		errc <- err
	}()
	waitFor(t, "the first update", func() bool { return s.updateCount() == 1 })
	cancel()
	err := <-errc
	is.True(errors.Is(err, context.Canceled))
	close(gate)
	waitFor(t, "the rollback", func() bool { d, k := s.state("c1"); return len(d) == 0 && len(k) == 0 })
	is.Equal(s.updateCount(), 2) // attach, then detach
	ms, err := m.Mounts(context.Background(), "c1")
	is.NoErr(err)
	is.Equal(len(ms), 0)
}

// TestQueuedAcquireCancelled: a caller that gives up before its change is
// written takes nothing and costs no update.
func TestQueuedAcquireCancelled(t *testing.T) {
	is := is.New(t)
	s := newFakeServer("c1")
	gate := make(chan struct{})
	s.onUpdate = func(n int, _ api.InstancePut) (<-chan struct{}, error) {
		if n == 1 {
			return gate, nil
		}
		return nil, nil
	}
	m, root := fakeManager(t, s)
	ctx := context.Background()
	first := make(chan error)
	go func() { _, err := m.Acquire(ctx, "c1", "first", root, executor.MountOptions{}); first <- err }()
	waitFor(t, "the first update", func() bool { return s.updateCount() == 1 })

	ctx2, cancel := context.WithCancel(ctx)
	second := make(chan error)
	go func() { _, err := m.Acquire(ctx2, "c1", "second", root, executor.MountOptions{}); second <- err }()
	waitFor(t, "the queued acquire", func() bool { return mountincus.QueueLen(m, "c1") == 1 })
	cancel()
	is.True(errors.Is(<-second, context.Canceled))
	is.Equal(mountincus.QueueLen(m, "c1"), 0)
	close(gate)
	is.NoErr(<-first)
	ms, err := m.Mounts(ctx, "c1")
	is.NoErr(err)
	is.Equal(len(ms), 1)
	is.Equal(ms[0].Alias, "first")
	is.Equal(s.updateCount(), 1)
}

// TestBadChangeFailsAlone: when the server refuses a batch because one
// device cannot be attached, the other changes of the batch still go
// through, each on its own.
func TestBadChangeFailsAlone(t *testing.T) {
	is := is.New(t)
	s := newFakeServer("c1")
	gate := make(chan struct{})
	bad := mountincus.DeviceName("bad")
	s.onUpdate = func(n int, put api.InstancePut) (<-chan struct{}, error) {
		if n == 1 {
			return gate, nil
		}
		if _, ok := put.Devices[bad]; ok {
			return nil, errors.New("Failed to start device: cannot mount")
		}
		return nil, nil
	}
	m, root := fakeManager(t, s)
	ctx := context.Background()
	first := make(chan error)
	go func() { _, err := m.Acquire(ctx, "c1", "first", root, executor.MountOptions{}); first <- err }()
	waitFor(t, "the first update", func() bool { return s.updateCount() == 1 })

	aliases := []string{"good1", "bad", "good2"}
	errs := make([]error, len(aliases))
	var wg sync.WaitGroup
	for i, a := range aliases {
		wg.Go(func() { _, errs[i] = m.Acquire(ctx, "c1", a, root, executor.MountOptions{}) })
	}
	waitFor(t, "three queued acquires", func() bool { return mountincus.QueueLen(m, "c1") == 3 })
	close(gate)
	wg.Wait()
	is.NoErr(<-first)
	is.NoErr(errs[0])
	is.True(errs[1] != nil && strings.Contains(errs[1].Error(), "cannot mount"))
	t.Log(errs[1])
	is.NoErr(errs[2])
	ms, err := m.Mounts(ctx, "c1")
	is.NoErr(err)
	var got []string
	for _, mt := range ms {
		got = append(got, mt.Alias)
	}
	is.Equal(got, []string{"first", "good1", "good2"})
	is.Equal(s.updateCount(), 1+1+3) // first; the batch, refused; each alone
}

// TestStaleRecordIgnored: a record whose device someone removed by hand is
// not a mount; acquiring the alias attaches it afresh.
func TestStaleRecordIgnored(t *testing.T) {
	is := is.New(t)
	s := newFakeServer("c1")
	s.insts["c1"].Config[mountincus.ConfigPrefix+mount.AliasHash("a")] = `{"alias":"a","holders":{"0123456789abcdef":"old"}}`
	m, root := fakeManager(t, s)
	ctx := context.Background()
	ms, err := m.Mounts(ctx, "c1")
	is.NoErr(err)
	is.Equal(len(ms), 0)
	h, err := m.Acquire(ctx, "c1", "a", root, executor.MountOptions{})
	is.NoErr(err)
	ms, err = m.Mounts(ctx, "c1")
	is.NoErr(err)
	is.Equal(len(ms), 1)
	is.Equal(len(ms[0].Holders), 1)
	is.Equal(ms[0].Holders[0].ID, h.Holder)
	is.Equal(ms[0].Holders[0].Owner, "incusexec")
}

// TestForkfileGoneIsRetried: incusd's file helper exiting under a device's
// stop fails the update with the instance put back as it was (seen once
// against the real daemon); the release tries again and succeeds.
func TestForkfileGoneIsRetried(t *testing.T) {
	is := is.New(t)
	s := newFakeServer("c1")
	s.onUpdate = func(n int, put api.InstancePut) (<-chan struct{}, error) {
		if n == 2 { // the release's first try
			return nil, errors.New(`Failed to stop device "incusexec-mount-f3": read unix @->/proc/self/fd/32/forkfile.sock: read: connection reset by peer`)
		}
		return nil, nil
	}
	m, root := fakeManager(t, s)
	ctx := context.Background()
	h, err := m.Acquire(ctx, "c1", "a", root, executor.MountOptions{})
	is.NoErr(err)
	is.NoErr(m.Release(ctx, h))
	is.Equal(s.updateCount(), 3) // attach; detach refused; detach again
	devices, _ := s.state("c1")
	is.Equal(len(devices), 0)
}
