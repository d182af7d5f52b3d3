package instance_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/internal/incustest"
	incus "github.com/lxc/incus/v6/client"
	"github.com/lxc/incus/v6/shared/api"
	"github.com/matryer/is"
)

func TestCreateLabelsStopDelete(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	d, m, _ := setup(t, instance.Config{})
	ctx := ctxFor(t, 2*time.Minute)
	before := time.Now().UTC().Truncate(time.Second)
	in, err := m.Create(ctx, instance.Spec{Image: incustest.BusyboxAlias, ID: "task-42", Config: map[string]string{"user.extra": "x"}})
	is.NoErr(err)
	is.True(strings.HasPrefix(in.Name(), instance.DefaultPrefix))
	is.NoErr(executor.CheckName(in.Name()))

	inst, _, err := d.Client.GetInstance(in.Name())
	is.NoErr(err)
	is.Equal(inst.StatusCode, api.Running)
	is.Equal(inst.Config[executor.OwnerKey], m.Owner())
	is.Equal(inst.Config[instance.LabelID], "task-42")
	is.Equal(inst.Config["user.extra"], "x")
	created, err := time.Parse(time.RFC3339, inst.Config[instance.LabelCreated])
	is.NoErr(err)
	is.True(!created.Before(before))
	names, err := m.List(ctx)
	is.NoErr(err)
	is.Equal(names, []string{in.Name()})

	// Graceful stop of busybox init, twice.
	is.NoErr(in.Stop(ctx))
	st, err := in.Status(ctx)
	is.NoErr(err)
	is.Equal(st, api.Stopped)
	is.NoErr(in.Stop(ctx))

	_, err = in.Exec(ctx, executor.Cmd{Args: []string{"true"}})
	is.True(errors.Is(err, instance.ErrNotRunning))

	is.NoErr(in.Start(ctx))
	is.NoErr(in.Start(ctx)) // already running
	is.NoErr(in.WaitReady(ctx, instance.Ready{NIC: "eth0", Family: "inet"}))

	is.NoErr(in.Delete(ctx))
	is.NoErr(in.Delete(ctx)) // gone already
	is.NoErr(in.Stop(ctx))
	_, err = m.Get(ctx, in.Name())
	is.True(errors.Is(err, instance.ErrNotFound))
	_, _, err = d.Client.GetInstance(in.Name())
	is.True(api.StatusErrorCheck(err, 404))
}

func TestCreateBadInput(t *testing.T) {
	t.Parallel()
	d, m, _ := setup(t, instance.Config{})
	for _, tc := range []struct {
		name string
		spec instance.Spec
		want error
	}{
		{"no image", instance.Spec{}, instance.ErrInvalid},
		{"name starts with digit", instance.Spec{Name: "1abc"}, instance.ErrInvalid},
		{"name starts with hyphen", instance.Spec{Name: "-abc"}, instance.ErrInvalid},
		{"name with underscore", instance.Spec{Name: "a_b"}, instance.ErrInvalid},
		{"name too long", instance.Spec{Name: "a" + strings.Repeat("b", 63)}, instance.ErrInvalid},
		{"bad prefix", instance.Spec{Prefix: "9x-"}, instance.ErrInvalid},
		{"reserved config", instance.Spec{Config: map[string]string{executor.OwnerKey: "else"}}, instance.ErrInvalid},
		{"bad ID", instance.Spec{ID: "has space"}, instance.ErrInvalid},
		{"unknown image", instance.Spec{Image: "no/such/alias"}, instance.ErrNotFound},
		{"unknown profile", instance.Spec{Profiles: []string{"default", "nope"}}, instance.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			spec := tc.spec
			if spec.Image == "" && tc.name != "no image" {
				spec.Image = incustest.BusyboxAlias
			}
			_, err := m.Create(ctxFor(t, time.Minute), spec)
			t.Log(err)
			is.True(errors.Is(err, tc.want))
		})
	}
	is := is.New(t)
	names, err := m.List(ctxFor(t, time.Minute))
	is.NoErr(err)
	is.Equal(len(names), 0) // nothing half-done left

	for _, cfg := range []instance.Config{{}, {Owner: "has space"}, {Owner: "o", Prefix: "_"}, {Owner: "o", StopGrace: -time.Second}, {Owner: "o", KeepExecOutputUpTo: -1}} {
		_, err := instance.New(d.Client, cfg)
		is.True(errors.Is(err, instance.ErrInvalid))
	}
	_, err = m.Get(ctxFor(t, time.Minute), "")
	is.True(errors.Is(err, instance.ErrInvalid))
}

// fixedRand yields the same bytes for every name, then others: the second
// manager's first name collides with the first manager's.
type fixedRand struct{ calls int }

func (f *fixedRand) Read(p []byte) (int, error) {
	f.calls++
	for i := range p {
		p[i] = 0xab
		if f.calls > 1 {
			p[i] = byte(f.calls)
		}
	}
	return len(p), nil
}

func TestCreateRetriesNameConflict(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	prefix := incustest.UniqueName("c") + "-"
	_, m1, _ := setup(t, instance.Config{Prefix: prefix, Rand: &fixedRand{}})
	_, m2, logs := setup(t, instance.Config{Prefix: prefix, Rand: &fixedRand{}})
	spec := instance.Spec{NoStart: true}
	first := launch(t, m1, spec)
	second := launch(t, m2, spec)
	is.True(first.Name() != second.Name())
	is.True(strings.Contains(logs.String(), "name taken"))

	// A name chosen by the caller is not retried.
	_, err := m2.Create(ctxFor(t, time.Minute), instance.Spec{Name: first.Name(), Image: incustest.BusyboxAlias, NoStart: true})
	is.True(errors.Is(err, instance.ErrAlreadyExists))
	// ... and the conflict did not delete the other owner's instance.
	_, err = m1.Get(ctxFor(t, time.Minute), first.Name())
	is.NoErr(err)
}

func TestReadyNetworkAndProbe(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	d, m, _ := setup(t, instance.Config{})
	probes := 0
	in := launch(t, m, instance.Spec{Ready: instance.Ready{
		NIC: "eth0", Family: "inet",
		Probe: func(ctx context.Context, in *instance.Instance) (bool, string, error) {
			probes++
			code, err := in.Exec(ctx, executor.Cmd{Args: []string{"test", "-s", "/etc/resolv.conf"}})
			return code == 0, "no /etc/resolv.conf yet", err
		},
	}})
	is.True(probes > 0)
	st, _, err := d.Client.GetInstanceState(in.Name())
	is.NoErr(err)
	var addr string
	for _, a := range st.Network["eth0"].Addresses {
		if a.Family == "inet" && a.Scope == "global" {
			addr = a.Address
		}
	}
	is.True(d.Gateway.Contains(mustAddr(t, addr)))
	// The DHCP client wrote the nameserver after binding.
	is.Equal(run(t, in, "cat", "/etc/resolv.conf"), "nameserver "+d.Gateway.Addr().String())
}

func TestReadyTimeoutSaysWhatWasSeen(t *testing.T) {
	t.Parallel()
	_, m, _ := setup(t, instance.Config{})
	for _, tc := range []struct {
		name  string
		ready instance.Ready
		seen  string
	}{
		{"missing NIC", instance.Ready{NIC: "eth9", Timeout: time.Second}, "no interface eth9 (have eth0, lo)"},
		{"no IPv6", instance.Ready{NIC: "eth0", Family: "inet6", Timeout: 2 * time.Second}, "eth0 up, addresses [inet "},
		{"probe", instance.Ready{Timeout: time.Second, Probe: func(context.Context, *instance.Instance) (bool, string, error) {
			return false, "the service is warming up", nil
		}}, "the service is warming up"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			_, err := m.Create(ctxFor(t, time.Minute), instance.Spec{Image: incustest.BusyboxAlias, Ready: tc.ready})
			t.Log(err)
			is.True(errors.Is(err, instance.ErrTimeout))
			is.True(strings.Contains(err.Error(), tc.seen)) // what was last seen
		})
	}
	is := is.New(t)
	names, err := m.List(ctxFor(t, time.Minute))
	is.NoErr(err)
	is.Equal(len(names), 0) // Create deleted what did not become ready

	// A probe error ends the wait at once; the context's deadline counts as
	// a timeout too.
	in := launch(t, m, instance.Spec{})
	boom := errors.New("boom")
	err = in.WaitReady(ctxFor(t, time.Minute), instance.Ready{Probe: func(context.Context, *instance.Instance) (bool, string, error) { return false, "", boom }})
	is.True(errors.Is(err, boom))
	err = in.WaitReady(ctxFor(t, 500*time.Millisecond), instance.Ready{NIC: "eth7"})
	is.True(errors.Is(err, instance.ErrTimeout))
	is.True(errors.Is(err, context.DeadlineExceeded))
	// Waiting on a stopped instance fails at once rather than timing out.
	is.NoErr(in.StopWithin(ctxFor(t, time.Minute), 0))
	err = in.WaitReady(ctxFor(t, time.Minute), instance.Ready{NIC: "eth0"})
	is.True(errors.Is(err, instance.ErrNotRunning))
}

// stubbornInit replaces busybox init with one that ignores every signal a
// graceful stop may send (Incus sends SIGPWR to a container's init).
const stubbornInit = `#!/bin/sh
trap '' PWR TERM INT HUP USR1 USR2
while :; do sleep 1; done
`

func TestStopEscalatesWhenInitIgnoresSignal(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	_, m, logs := setup(t, instance.Config{StopGrace: 2 * time.Second})
	in := launch(t, m, instance.Spec{NoStart: true})
	ctx := ctxFor(t, 2*time.Minute)
	is.NoErr(in.Push(ctx, "/sbin/init", strings.NewReader(stubbornInit), executor.FileOptions{Mode: 0o755}))
	is.NoErr(in.Start(ctx))
	is.NoErr(in.WaitReady(ctx, instance.Ready{}))
	is.Equal(run(t, in, "cat", "/proc/1/cmdline"), "/bin/sh\x00/sbin/init\x00")

	is.NoErr(in.Stop(ctx))
	st, err := in.Status(ctx)
	is.NoErr(err)
	is.Equal(st, api.Stopped)
	is.True(strings.Contains(logs.String(), "graceful stop did not finish; forcing"))
}

func TestRestartKeepsEphemeral(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	_, m, _ := setup(t, instance.Config{})
	in := launch(t, m, instance.Spec{Ephemeral: true})
	ctx := ctxFor(t, 2*time.Minute)
	run(t, in, "touch", "/root/marker")
	boot := run(t, in, "cat", "/proc/1/stat")
	is.NoErr(in.Restart(ctx, instance.Ready{NIC: "eth0"}))
	is.True(run(t, in, "cat", "/proc/1/stat") != boot)
	run(t, in, "test", "-e", "/root/marker") // same instance, not a new one

	// An ephemeral instance is gone once stopped; Delete and Stop agree.
	is.NoErr(in.Stop(ctx))
	_, err := m.Get(ctx, in.Name())
	is.True(errors.Is(err, instance.ErrNotFound))
	is.NoErr(in.Delete(ctx))
}

func TestDeleteForcesRunningEphemeral(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	d, m, _ := setup(t, instance.Config{})
	in := launch(t, m, instance.Spec{Ephemeral: true})
	is.NoErr(in.Delete(ctxFor(t, time.Minute)))
	_, _, err := d.Client.GetInstance(in.Name())
	is.True(api.StatusErrorCheck(err, 404))
}

// TestDiscard: a running ephemeral instance is left to the server to stop
// and delete, which it does; any other is deleted before Discard returns;
// one already gone is fine.
func TestDiscard(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	d, m, logs := setup(t, instance.Config{})
	ctx := ctxFor(t, time.Minute)
	eph := launch(t, m, instance.Spec{Ephemeral: true})
	is.NoErr(eph.Discard(ctx))
	is.True(strings.Contains(logs.String(), "instance discarded")) // left to the server
	for {
		_, _, err := d.Client.GetInstance(eph.Name())
		if api.StatusErrorCheck(err, 404) {
			break
		}
		is.NoErr(err)
		select {
		case <-ctx.Done():
			t.Fatalf("%s still there a minute after Discard", eph.Name())
		case <-time.After(100 * time.Millisecond):
		}
	}
	is.NoErr(eph.Discard(ctx)) // gone: nothing to do

	plain := launch(t, m, instance.Spec{})
	is.NoErr(plain.Discard(ctx))
	_, _, err := d.Client.GetInstance(plain.Name())
	is.True(api.StatusErrorCheck(err, 404)) // deleted before Discard returned
	is.Equal(strings.Count(logs.String(), "instance discarded"), 1)
}

// TestWaitReadyGone: an instance that is not there while it is waited for
// (an ephemeral one that the server deleted when its init exited) is not
// running, and not found.
func TestWaitReadyGone(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	_, m, _ := setup(t, instance.Config{})
	err := m.Instance(incustest.UniqueName("gone-")).WaitReady(ctxFor(t, time.Minute), instance.Ready{Systemd: true})
	is.True(errors.Is(err, instance.ErrNotRunning))
	is.True(errors.Is(err, instance.ErrNotFound))
}

func TestStats(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	d, m, _ := setup(t, instance.Config{})
	in := launch(t, m, instance.Spec{
		Config: map[string]string{"limits.cpu": "1", "limits.memory": "256MiB"},
		// A size makes the pool account for the disk (btrfs quota groups).
		Devices: map[string]map[string]string{"root": {"type": "disk", "path": "/", "pool": d.Pool, "size": "1GiB"}},
	})
	run(t, in, "sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done")
	var out bytes.Buffer
	_, err := in.Exec(ctxFor(t, time.Minute), executor.Cmd{Args: []string{"dd", "if=/dev/zero", "of=/root/blob", "bs=1M", "count=8"}, Stderr: &out})
	is.NoErr(err)
	run(t, in, "sync")
	s, err := in.Stats(ctxFor(t, time.Minute))
	is.NoErr(err)
	t.Logf("%+v (pool driver %s)", s, d.PoolDriver)
	is.Equal(s.CPUs, 1)
	is.Equal(s.MemoryTotal, uint64(256<<20))
	is.True(s.MemoryUsed > 0 && s.MemoryUsed < s.MemoryTotal)
	is.True(s.CPUTime > 0)
	is.True(s.Processes >= 1)
	is.Equal(s.Status, "Running")
	if d.PoolDriver == "btrfs" { // the dir driver accounts for no disk use
		is.True(s.DiskUsed >= 8<<20) // the 8 MiB written count
		is.True(s.DiskAvailable > 0 && s.DiskAvailable <= 1<<30-8<<20)
	}
}

// TestStartWaitsForANetworkOutOfService restarts incusd with its bridge
// unable to start (incustest's RestartWithBridgeDown): incusd then refuses
// instances on it until a start of its own, a minute later, succeeds. Start
// and Create keep trying within their context and, when it ends, say why
// (ErrUnavailable, the network's name). Each context is cancelled as the
// call logs its first retry, so the refusal is seen however long the
// server takes on a loaded host. That the calls succeed once the server
// takes the instance is TestStartRetriesUnavailableNetwork's and
// TestCreateRetriesUnavailableNetwork's part (incusd's own retry would hold
// this test for a minute).
func TestStartWaitsForANetworkOutOfService(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	d := incustest.Private(t, incustest.Options{})
	d.BusyboxImage(t)
	// The host's own client: Restart replaces d.Client.
	c, err := incus.ConnectIncusUnix(d.Socket, nil)
	is.NoErr(err)
	defer c.Disconnect()
	h := &cancelOnMessage{Handler: slog.NewTextHandler(io.Discard, nil), on: &cancels{m: map[string]context.CancelFunc{}}}
	m, err := instance.New(c, instance.Config{Owner: incustest.UniqueName("netdown-"), Logger: slog.New(h)})
	is.NoErr(err)
	defer m.Close()
	ctx := ctxFor(t, 3*time.Minute)
	stopped, err := m.Create(ctx, instance.Spec{Image: incustest.BusyboxAlias, NoStart: true})
	is.NoErr(err)
	defer stopped.Delete(context.Background())

	release, err := d.RestartWithBridgeDown(ctx)
	is.NoErr(err)
	defer release()
	is.True(d.WaitNetworks(ctxFor(t, 2*time.Second), nil) != nil) // the bridge is out of service
	startCtx, cancelStart := context.WithTimeout(ctx, time.Minute)
	defer cancelStart()
	h.on.set("network unavailable; retrying start", cancelStart)
	err = stopped.Start(startCtx)
	t.Logf("start while the bridge is down: %v", err)
	is.True(errors.Is(err, instance.ErrUnavailable))          // refused: network out of service
	is.True(errors.Is(err, context.Canceled))                 // until ctx ended
	is.True(strings.Contains(err.Error(), stopped.Name()))    // names the instance
	is.True(strings.Contains(err.Error(), `"`+d.Network+`"`)) // and the network
	createCtx, cancelCreate := context.WithTimeout(ctx, time.Minute)
	defer cancelCreate()
	// (Create makes the instance stopped once refused, and waits at its
	// start.)
	h.on.set("network unavailable; retrying start", cancelCreate)
	_, err = m.Create(createCtx, instance.Spec{Image: incustest.BusyboxAlias})
	t.Logf("create while the bridge is down: %v", err)
	is.True(errors.Is(err, instance.ErrUnavailable))
	is.True(errors.Is(err, context.Canceled))
	is.True(strings.Contains(err.Error(), `"`+d.Network+`"`))
	left, err := m.List(ctx)
	is.NoErr(err)
	is.Equal(len(left), 1) // the refused creation left nothing
	is.NoErr(stopped.Delete(ctx))
}

// cancelOnMessage is a log handler that cancels a context when a record
// with a given message is logged: synchronously, inside the call that logs.
type cancelOnMessage struct {
	slog.Handler
	on *cancels
}

type cancels struct {
	mu sync.Mutex
	m  map[string]context.CancelFunc
}

func (c *cancels) set(msg string, f context.CancelFunc) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[msg] = f
}

func (h *cancelOnMessage) Handle(ctx context.Context, r slog.Record) error {
	h.on.mu.Lock()
	f := h.on.m[r.Message]
	h.on.mu.Unlock()
	if f != nil {
		f()
	}
	return h.Handler.Handle(ctx, r)
}

func (h *cancelOnMessage) WithAttrs(a []slog.Attr) slog.Handler {
	return &cancelOnMessage{Handler: h.Handler.WithAttrs(a), on: h.on}
}

func (h *cancelOnMessage) WithGroup(name string) slog.Handler {
	return &cancelOnMessage{Handler: h.Handler.WithGroup(name), on: h.on}
}
