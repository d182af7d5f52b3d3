package incustest_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/incusexec/incusexec/internal/incustest"
	incus "github.com/lxc/incus/v6/client"
	"github.com/lxc/incus/v6/shared/api"
	"github.com/matryer/is"
)

func TestMain(m *testing.M) { incustest.Main(m) }

// TestDaemonRunsBusybox starts a private daemon on each pool driver, launches
// the busybox image, runs a command, waits for a DHCP lease on the bridge and
// stops the instance gracefully; Cleanup then checks that nothing is left.
func TestDaemonRunsBusybox(t *testing.T) {
	for _, driver := range []string{"dir", "btrfs"} {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			is := is.New(t)
			d := incustest.Private(t, incustest.Options{Pool: driver, PoolSize: "2GiB"})
			is.Equal(d.PoolDriver, driver)
			fp := d.BusyboxImage(t)
			is.True(len(fp) == 64)

			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			name := incustest.UniqueName("bb-")
			op, err := d.Client.CreateInstance(api.InstancesPost{
				Name: name, Source: api.InstanceSource{Type: "image", Alias: incustest.BusyboxAlias}, Start: true,
			})
			is.NoErr(err)
			is.NoErr(op.WaitContext(ctx))

			var out bytes.Buffer
			is.NoErr(execIn(ctx, d.Client, name, []string{"cat", "/etc/hostname"}, &out))
			is.Equal(strings.TrimSpace(out.String()), name) // hostname template applied

			addr := waitIPv4(ctx, t, d.Client, name)
			is.True(d.Gateway.Masked().Contains(addr)) // lease from the test bridge

			start := time.Now()
			op, err = d.Client.UpdateInstanceState(name, api.InstanceStatePut{Action: "stop", Timeout: 30}, "")
			is.NoErr(err)
			is.NoErr(op.WaitContext(ctx))
			t.Logf("graceful stop took %s", time.Since(start).Round(time.Millisecond))
			st, _, err := d.Client.GetInstanceState(name)
			is.NoErr(err)
			is.Equal(st.StatusCode, api.Stopped)
		})
	}
}

// TestSharedDaemonIsReused checks that Shared hands every test one daemon.
func TestSharedDaemonIsReused(t *testing.T) {
	is := is.New(t)
	a := incustest.Shared(t)
	b := incustest.Shared(t)
	is.True(a == b)
	_, err := os.Stat(a.Socket)
	is.NoErr(err)
	is.True(a.Network != "")
}

// TestDaemonStopRemovesEverything stops a daemon holding an instance and
// checks the directory is gone, which Stop does only when no process, mount,
// loop device or bridge of the daemon is left.
func TestDaemonStopRemovesEverything(t *testing.T) {
	is := is.New(t)
	ctx, d := startOwn(t)
	d.BusyboxImage(t)
	op, err := d.Client.CreateInstance(api.InstancesPost{
		Name: "left", Source: api.InstanceSource{Type: "image", Alias: incustest.BusyboxAlias}, Start: true,
	})
	is.NoErr(err)
	is.NoErr(op.WaitContext(ctx))
	is.NoErr(d.Stop(ctx))
	_, err = os.Stat(d.Dir)
	is.True(os.IsNotExist(err))
}

// startOwn starts a daemon of the test's own on a dir pool, which the test
// stops; ctx ends after three minutes.
func startOwn(t *testing.T) (context.Context, *incustest.Daemon) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	d, err := incustest.Start(ctx, incustest.Options{Pool: "dir"})
	if err != nil {
		incustest.SkipOrFail(t, err)
	}
	return ctx, d
}

// TestStopClearsFirewallIncusSkips takes a daemon's bridge interface and
// its dnsmasq away behind its back: incusd then deletes the network without
// removing its nftables chains (it tears down only a bridge it finds up),
// which would stay in the host's ruleset for good. Stop removes them.
func TestStopClearsFirewallIncusSkips(t *testing.T) {
	is := is.New(t)
	ctx, d := startOwn(t)
	chains, err := incustest.FirewallChains(d.Network)
	is.NoErr(err)
	is.True(len(chains) > 0) // the bridge's firewall is there
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if args := string(b); strings.HasPrefix(args, "dnsmasq\x00") && strings.Contains(args, "\x00--interface="+d.Network+"\x00") {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			is.NoErr(syscall.Kill(pid, syscall.SIGKILL))
		}
	}
	out, err := exec.Command("ip", "link", "delete", d.Network).CombinedOutput()
	is.True(err == nil || strings.Contains(string(out), "Cannot find device"))
	// Stop deletes the network through incusd, then clears what it left.
	is.NoErr(d.Stop(ctx))
	chains, err = incustest.FirewallChains(d.Network)
	is.NoErr(err)
	is.Equal(chains, []string(nil))
}

func execIn(ctx context.Context, c incus.InstanceServer, name string, argv []string, stdout *bytes.Buffer) error {
	done := make(chan bool)
	var stderr bytes.Buffer
	op, err := c.ExecInstance(name, api.InstanceExecPost{Command: argv, WaitForWS: true},
		&incus.InstanceExecArgs{Stdout: stdout, Stderr: &stderr, DataDone: done})
	if err != nil {
		return err
	}
	if err := op.WaitContext(ctx); err != nil {
		return err
	}
	<-done
	return nil
}

func waitIPv4(ctx context.Context, t *testing.T, c incus.InstanceServer, name string) (addr netipAddr) {
	t.Helper()
	for {
		st, _, err := c.GetInstanceState(name)
		if err == nil {
			if n, ok := st.Network["eth0"]; ok {
				for _, a := range n.Addresses {
					if a.Family == "inet" && a.Scope == "global" {
						return mustAddr(t, a.Address)
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no IPv4 address on eth0 of %s: %v", name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
