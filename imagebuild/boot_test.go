package imagebuild_test

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/incusexec/incusexec/internal/incustest"
	incus "github.com/lxc/incus/v6/client"
	"github.com/lxc/incus/v6/shared/api"
	"github.com/matryer/is"
)

func TestMain(m *testing.M) { incustest.Main(m) }

// run executes cmd in the instance and returns its stdout; a non-zero exit
// is an error carrying stderr.
func run(ctx context.Context, c incus.InstanceServer, name string, cmd ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	args := &incus.InstanceExecArgs{Stdout: nopWriteCloser{&stdout}, Stderr: nopWriteCloser{&stderr}, DataDone: make(chan bool)}
	op, err := c.ExecInstance(name, api.InstanceExecPost{Command: cmd, WaitForWS: true}, args)
	if err != nil {
		return "", err
	}
	if err := op.WaitContext(ctx); err != nil {
		return "", err
	}
	select { // the output is complete only once the streams are done
	case <-args.DataDone:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	code, _ := op.Get().Metadata["return"].(float64)
	if code != 0 {
		return stdout.String(), fmt.Errorf("%v exited %v: %s", cmd, code, stderr.String())
	}
	return stdout.String(), nil
}

type nopWriteCloser struct{ *bytes.Buffer }

func (nopWriteCloser) Close() error { return nil }

// bootCheck launches alias with the Debusine-style profile and checks what a
// worker relies on: systemd reaches running or degraded, host0 has an IPv4
// address from the bridge, /etc/hostname is the instance name, and the
// generator is executable.
func bootCheck(t *testing.T, d *incustest.Daemon, alias string) {
	t.Helper()
	is := is.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	name := incustest.UniqueName("deb-")
	op, err := d.Client.CreateInstance(api.InstancesPost{
		Name: name, Source: api.InstanceSource{Type: "image", Alias: alias}, Start: true,
		InstancePut: api.InstancePut{Profiles: []string{d.DebianProfile(t)}, Ephemeral: false},
	})
	is.NoErr(err)
	is.NoErr(op.WaitContext(ctx))
	t.Cleanup(func() {
		op, err := d.Client.UpdateInstanceState(name, api.InstanceStatePut{Action: "stop", Force: true, Timeout: -1}, "")
		if err == nil {
			_ = op.Wait()
		}
		if op, err := d.Client.DeleteInstance(name); err == nil {
			_ = op.Wait()
		}
	})

	var state string
	var lastErr error
	for ctx.Err() == nil {
		var out string
		out, lastErr = run(ctx, d.Client, name, "systemctl", "is-system-running", "--wait")
		state = strings.TrimSpace(out)
		// "offline": systemd is not up yet to answer.
		if state != "" && state != "offline" && state != "starting" && state != "initializing" {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if state != "running" {
		dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer dcancel()
		for _, cmd := range [][]string{
			{"systemctl", "--failed", "--no-legend", "--plain"},
			{"systemctl", "list-jobs"},
			{"ip", "addr"},
			{"journalctl", "-b", "--no-pager", "-n", "60"},
		} {
			out, err := run(dctx, d.Client, name, cmd...)
			t.Logf("%v: %v\n%s", cmd, err, out)
		}
		t.Logf("system state %q (last error %v)", state, lastErr)
	}
	is.True(state == "running" || state == "degraded")

	addrs, err := run(ctx, d.Client, name, "ip", "-4", "-o", "addr", "show", "dev", "host0")
	is.NoErr(err)
	fields := strings.Fields(addrs)
	var addr netip.Prefix
	for i, f := range fields {
		if f == "inet" && i+1 < len(fields) {
			addr, err = netip.ParsePrefix(fields[i+1])
			is.NoErr(err)
		}
	}
	is.True(addr.IsValid())                           // host0 has an IPv4 address
	is.True(d.Gateway.Masked().Contains(addr.Addr())) // from the test bridge

	// The boot waited for that address with the image's own unit, and not
	// for systemd-networkd-wait-online (a second more, for IPv6
	// link-local duplicate address detection on a bridge without IPv6).
	units, err := run(ctx, d.Client, name, "systemctl", "show", "-p", "ActiveState", "--value", "incusexec-host0-ipv4.service", "systemd-networkd-wait-online.service")
	is.NoErr(err)
	is.Equal(strings.Fields(units), []string{"active", "inactive"})

	hostname, err := run(ctx, d.Client, name, "cat", "/etc/hostname")
	is.NoErr(err)
	is.Equal(hostname, name+"\n")
	hosts, err := run(ctx, d.Client, name, "cat", "/etc/hosts")
	is.NoErr(err)
	is.True(strings.Contains(hosts, "127.0.1.1\t"+name+"\n"))

	mode, err := run(ctx, d.Client, name, "stat", "-c", "%a %u", "/etc/systemd/system-generators/lxc")
	is.NoErr(err)
	is.Equal(strings.TrimSpace(mode), "755 0")
}

func TestSplitImageBoots(t *testing.T) {
	d := incustest.Shared(t)
	alias := d.DebianImage(t)
	is.New(t).Equal(alias, "artifact/"+incustest.DebianArtifactID)
	bootCheck(t, d, alias)
}
