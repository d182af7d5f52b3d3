package instance_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/internal/incustest"
	incus "github.com/lxc/incus/v6/client"
	"github.com/lxc/incus/v6/shared/api"
	"github.com/matryer/is"
)

func TestStat(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	_, m, _ := setup(t, instance.Config{})
	in := launch(t, m, instance.Spec{})
	ctx := ctxFor(t, time.Minute)
	is.NoErr(in.Push(ctx, "/srv/d/f", strings.NewReader("hello\n"), executor.FileOptions{UID: 1234, GID: 99, Mode: 0o640, MkdirAll: true}))
	run(t, in, "sh", "-c", "chown 1234:99 /srv/d && chmod 0750 /srv/d && ln -s /srv/d/f /srv/link")

	st, err := in.Stat(ctx, "/srv/d/f")
	is.NoErr(err)
	is.Equal(st, executor.FileInfo{Path: "/srv/d/f", Mode: 0o640, UID: 1234, GID: 99, Size: 6})

	st, err = in.Stat(ctx, "/srv/d/")
	is.NoErr(err)
	is.True(st.Mode.IsDir())
	is.Equal(st.Mode.Perm(), fs.FileMode(0o750))
	is.Equal([]int{st.UID, st.GID}, []int{1234, 99})

	st, err = in.Stat(ctx, "/srv/link") // the link itself, not its target
	is.NoErr(err)
	is.Equal(st.Mode.Type(), fs.ModeSymlink)

	_, err = in.Stat(ctx, "/srv/missing")
	is.True(errors.Is(err, instance.ErrNotFound))
	is.True(strings.Contains(err.Error(), "/srv/missing"))
	_, err = in.Stat(ctx, "srv/d/f")
	is.True(errors.Is(err, instance.ErrInvalid))

	_, err = m.Instance(incustest.UniqueName("gone-")).Stat(ctx, "/etc")
	is.True(errors.Is(err, instance.ErrNotFound))
}

func TestEnsureUser(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	_, m, _ := setup(t, instance.Config{})
	in := launch(t, m, instance.Spec{})
	ctx := ctxFor(t, time.Minute)

	// Exec with NoCreateUser refuses a user that does not exist, and
	// leaves /etc/passwd alone.
	_, err := in.Exec(ctx, executor.Cmd{Args: []string{"true"}, User: "builder", NoCreateUser: true})
	is.True(errors.Is(err, instance.ErrUser))
	is.True(errors.Is(err, instance.ErrNotFound))
	is.Equal(run(t, in, "sh", "-c", "grep -c ^builder: /etc/passwd || true"), "0")

	u, err := in.EnsureUser(ctx, "builder")
	is.NoErr(err)
	is.Equal(u.Name, "builder")
	is.Equal(u.Home, "/home/builder")
	is.True(u.UID >= 1000)
	is.Equal(u.UID, u.GID)
	st, err := in.Stat(ctx, u.Home)
	is.NoErr(err)
	is.True(st.Mode.IsDir())
	is.Equal([]int{st.UID, st.GID}, []int{u.UID, u.GID})

	// Idempotent, also through a fresh handle (no cache).
	again, err := m.Instance(in.Name()).EnsureUser(ctx, "builder")
	is.NoErr(err)
	is.Equal(again, u)
	is.Equal(run(t, in, "grep", "-c", "^builder:", "/etc/passwd"), "1")

	// Now it exists, NoCreateUser runs as it.
	var out strings.Builder
	code, err := m.Instance(in.Name()).Exec(ctx, executor.Cmd{Args: []string{"sh", "-c", "id -u; echo $HOME"}, User: "builder", NoCreateUser: true, Stdout: &out})
	is.NoErr(err)
	is.Equal(code, 0)
	is.Equal(out.String(), strings.Join([]string{strconv.Itoa(u.UID), u.Home, ""}, "\n"))

	// An existing system user is returned as it is.
	nobody, err := in.EnsureUser(ctx, "nobody")
	is.NoErr(err)
	is.Equal(nobody.UID, 65534)

	for _, bad := range []string{"", "Root", "1abc", "a b", strings.Repeat("a", 33)} {
		_, err := in.EnsureUser(ctx, bad)
		if !errors.Is(err, instance.ErrInvalid) {
			t.Errorf("EnsureUser(%q): %v, want ErrInvalid", bad, err)
		}
	}

	// A Config.CreateUser hook is what creates the user.
	refused := errors.New("refused by hook")
	_, m2, _ := setup(t, instance.Config{CreateUser: func(context.Context, *instance.Instance, string) error { return refused }})
	_, err = m2.Instance(in.Name()).EnsureUser(ctx, "other")
	is.True(errors.Is(err, refused))
	is.True(errors.Is(err, instance.ErrUser))
}

// unavailableNetwork is the real client whose first creations fail as a
// daemon refuses them while it has the network out of service, for a
// number of refusals the test chooses (TestStartWaitsForANetworkOutOfService
// makes the daemon do it, for a minute).
type unavailableNetwork struct {
	instance.Client
	refusals atomic.Int32
	other    error // returned instead, once, when set
	// startRefusals counts the start requests refused likewise;
	// startOther is returned instead, once, when set.
	startRefusals atomic.Int32
	startOther    error
	// cancel, when set, is called as the start request after
	// cancelAfter more is in flight (as a host's ctx can end then).
	cancel      context.CancelFunc
	cancelAfter atomic.Int32
	// createCancel, when set, is called as the creation after the
	// refusals is in flight; cancelledStart is that request's Start.
	createCancel   context.CancelFunc
	cancelledStart bool
}

func (u *unavailableNetwork) CreateInstance(req api.InstancesPost) (incus.Operation, error) {
	if u.other != nil {
		err := u.other
		u.other = nil
		return nil, err
	}
	if u.refusals.Add(-1) >= 0 {
		return nil, api.StatusErrorf(503, "Failed to start device %q: Network %q unavailable on this server", "eth0", "incusbr0")
	}
	if u.createCancel != nil {
		u.createCancel()
		u.createCancel = nil
		u.cancelledStart = req.Start
		return nil, fmt.Errorf("%w (operation cancelled)", context.Canceled)
	}
	return u.Client.CreateInstance(req)
}

func (u *unavailableNetwork) UpdateInstanceState(name string, put api.InstanceStatePut, etag string) (incus.Operation, error) {
	if put.Action == "start" && u.startOther != nil {
		err := u.startOther
		u.startOther = nil
		return nil, err
	}
	if put.Action == "start" && u.cancel != nil && u.cancelAfter.Add(-1) < 0 {
		u.cancel()
		u.cancel = nil
		return nil, fmt.Errorf("%w (operation cancelled)", context.Canceled)
	}
	if put.Action == "start" && u.startRefusals.Add(-1) >= 0 {
		return nil, fmt.Errorf("Failed pre-start check for device %q: Network %q unavailable on this server", "eth0", "incusbr0")
	}
	return u.Client.UpdateInstanceState(name, put, etag)
}

func TestStartRetriesUnavailableNetwork(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	d, m, _ := setup(t, instance.Config{})
	c := &unavailableNetwork{Client: d.Client}
	m2, err := instance.New(c, instance.Config{Owner: m.Owner()})
	is.NoErr(err)
	defer m2.Close()
	in := launch(t, m2, instance.Spec{NoStart: true})
	c.startRefusals.Store(3)
	is.NoErr(in.Start(ctxFor(t, time.Minute)))
	is.Equal(c.startRefusals.Load(), int32(-1)) // three refusals, then the start
	st, err := in.Status(ctxFor(t, time.Minute))
	is.NoErr(err)
	is.Equal(st, api.Running)

	// Restart: the stop done, the start refused, then taken.
	c.startRefusals.Store(2)
	restart := &refusingRestart{unavailableNetwork: c}
	m3, err := instance.New(restart, instance.Config{Owner: m.Owner()})
	is.NoErr(err)
	defer m3.Close()
	is.NoErr(m3.Instance(in.Name()).Restart(ctxFor(t, time.Minute), instance.Ready{}))
	is.Equal(c.startRefusals.Load(), int32(-1))
	st, err = in.Status(ctxFor(t, time.Minute))
	is.NoErr(err)
	is.Equal(st, api.Running)

	// ctx ends while a retry is in flight: the error still says why.
	is.NoErr(in.StopWithin(ctxFor(t, time.Minute), 0))
	c.startRefusals.Store(1000)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.cancel = cancel
	c.cancelAfter.Store(2)
	err = in.Start(ctx)
	t.Logf("start cancelled during a retry: %v", err)
	is.True(errors.Is(err, instance.ErrUnavailable))
	is.True(errors.Is(err, context.Canceled))
	is.True(strings.Contains(err.Error(), `"incusbr0" unavailable`))

	// Not retried: another error.
	c.startRefusals.Store(0)
	c.startOther = errors.New("Failed pre-start check for device \"eth0\": something else")
	err = in.Start(ctxFor(t, time.Minute))
	is.True(err != nil && strings.Contains(err.Error(), "something else"))
	is.True(!errors.Is(err, instance.ErrUnavailable))
}

// refusingRestart stops the instance on a restart and then fails it as
// incusd does when the start half is refused for the network.
type refusingRestart struct{ *unavailableNetwork }

func (r *refusingRestart) UpdateInstanceState(name string, put api.InstanceStatePut, etag string) (incus.Operation, error) {
	if put.Action != "restart" {
		return r.unavailableNetwork.UpdateInstanceState(name, put, etag)
	}
	op, err := r.Client.UpdateInstanceState(name, api.InstanceStatePut{Action: "stop", Force: true, Timeout: -1}, etag)
	if err != nil {
		return nil, err
	}
	if err := op.Wait(); err != nil {
		return nil, err
	}
	r.startRefusals.Add(-1)
	return nil, fmt.Errorf("Failed pre-start check for device %q: Network %q unavailable on this server", "eth0", "incusbr0")
}

func TestCreateRetriesUnavailableNetwork(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	d, m, _ := setup(t, instance.Config{})
	c := &unavailableNetwork{Client: d.Client}
	c.refusals.Store(3)
	m2, err := instance.New(c, instance.Config{Owner: m.Owner()})
	is.NoErr(err)
	defer m2.Close()
	in := launch(t, m2, instance.Spec{})
	is.Equal(c.refusals.Load(), int32(-1)) // three refusals, then the creation
	st, err := in.Status(ctxFor(t, time.Minute))
	is.NoErr(err)
	is.Equal(st, api.Running)

	// ctx ends while the creation after a refusal is in flight: that
	// creation makes the instance stopped (to wait at its start, not
	// create and delete one per retry), and the error still says why.
	c.refusals.Store(1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.createCancel = cancel
	_, err = m2.Create(ctx, instance.Spec{Image: incustest.BusyboxAlias})
	t.Logf("create cancelled after a refusal: %v", err)
	is.True(!c.cancelledStart)
	is.True(errors.Is(err, instance.ErrUnavailable))
	is.True(errors.Is(err, context.Canceled))
	is.True(strings.Contains(err.Error(), `"incusbr0" unavailable`))

	// Not retried: ctx ends first, or another error.
	c.refusals.Store(1000)
	_, err = m2.Create(ctxFor(t, 500*time.Millisecond), instance.Spec{Image: incustest.BusyboxAlias})
	is.True(errors.Is(err, instance.ErrUnavailable))
	is.True(c.refusals.Load() > 990) // a few attempts, not a busy loop
	c.refusals.Store(0)
	c.other = api.StatusErrorf(503, "Storage pool %q unavailable on this server", "p")
	_, err = m2.Create(ctxFor(t, time.Minute), instance.Spec{Image: incustest.BusyboxAlias})
	is.True(errors.Is(err, instance.ErrUnavailable))
	is.True(strings.Contains(err.Error(), "Storage pool"))
	left, err := m.List(ctxFor(t, time.Minute))
	is.NoErr(err)
	is.Equal(len(left), 1)
}
