package instance_test

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/instance"
	"github.com/lxc/incus/v6/shared/api"
	"github.com/matryer/is"
)

// stateCounter counts the state requests a manager makes: each one costs
// the server, and the booting instance, CPU.
type stateCounter struct {
	instance.Client
	n atomic.Int32
}

func (c *stateCounter) GetInstanceState(name string) (*api.InstanceState, string, error) {
	c.n.Add(1)
	return c.Client.GetInstanceState(name)
}

// TestReadyWaitsForSystemdBeforeAskingForTheAddress: with systemd and a
// NIC to wait for, WaitReady waits inside the instance for the boot to
// finish (the image's boot waits for host0's IPv4) and then asks the
// server for the address once, instead of polling the state all through
// the boot. The instance is then truly ready: systemd running or degraded,
// host0 with an IPv4 address.
// Not parallel: the Incus client v6.23.0 races with itself (skipEvents)
// when one client is used from several goroutines, which -race reports.
func TestReadyWaitsForSystemdBeforeAskingForTheAddress(t *testing.T) {
	is := is.New(t)
	d, _, _ := setup(t, instance.Config{})
	image := d.DebianImage(t)
	profile := d.DebianProfile(t)
	counter := &stateCounter{Client: d.Client}
	m, err := instance.New(counter, instance.Config{Owner: "ready-order-" + strings.ToLower(t.Name()[len(t.Name())-8:])})
	is.NoErr(err)
	t.Cleanup(func() { m.Close() })
	ctx := ctxFor(t, 3*time.Minute)
	in, err := m.Create(ctx, instance.Spec{
		Image: image, Profiles: []string{profile}, Ephemeral: true,
		Ready: instance.Ready{Systemd: true, NIC: "host0", Family: "inet", Timeout: 2 * time.Minute},
	})
	is.NoErr(err)
	defer in.Delete(ctxFor(t, time.Minute))
	calls := counter.n.Load()

	var out strings.Builder
	_, err = in.Exec(ctx, executor.Cmd{Args: []string{"systemctl", "is-system-running"}, Stdout: &out})
	is.NoErr(err)
	state := strings.TrimSpace(out.String())
	is.True(state == "running" || state == "degraded")
	st, _, err := d.Client.GetInstanceState(in.Name())
	is.NoErr(err)
	v4 := false
	for _, a := range st.Network["host0"].Addresses {
		v4 = v4 || (a.Family == "inet" && a.Scope == "global")
	}
	is.True(v4)               // host0 has its IPv4 address
	is.Equal(calls, int32(1)) // one state request, after systemd was up
}
