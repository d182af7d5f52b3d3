package main

import (
	"bufio"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/matryer/is"

	"github.com/incusexec/incusexec/imagebuild/imagetest"
	"github.com/incusexec/incusexec/internal/incustest"
)

func TestDemoFake(t *testing.T) {
	is := is.New(t)
	r := incusexec(t, t.Context(), nil, "", "demo", "--backend", "fake")
	is.Equal(r.code, 0)
	is.True(strings.Contains(r.stdout, "NO Incus is involved"))
	is.True(strings.Contains(r.stdout, "exit-code"))
	is.True(strings.Contains(r.stdout, "done: nothing the demo created is left"))
}

// TestDemo runs the demo as `make demo` does on a fresh installation: on a
// daemon with no storage pool, no network and an empty default profile. It
// must create a pool and remove it again, and leave nothing it created.
func TestDemo(t *testing.T) {
	is := is.New(t)
	d := incustest.Private(t, incustest.Options{Pool: "dir", NoNetwork: true})
	p, etag, err := d.Client.GetProfile("default")
	is.NoErr(err)
	p.Devices = map[string]map[string]string{}
	is.NoErr(d.Client.UpdateProfile("default", p.Writable(), etag))
	is.NoErr(d.Client.DeleteStoragePool(d.Pool))

	r := incusexec(t, t.Context(), d, "", "demo")
	is.Equal(r.code, 0)
	assertDemoGone(t, d, "incusexec")
	for _, want := range []string{
		"storage pool incusexec created",
		"bridge iedemo-br",
		"hello from demo-",
		`"input pushed by the host" read by demo`,
		"exit-code  demo-",
		"after the second Unmount it is gone",
		"storage-pool incusexec",
		"done: nothing the demo created is left",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	pools, err := d.Client.GetStoragePoolNames()
	is.NoErr(err)
	is.Equal(len(pools), 0)
}

// assertDemoGone checks that nothing the demo creates is on d.
func assertDemoGone(t *testing.T, d *incustest.Daemon, pool string) {
	t.Helper()
	is := is.New(t)
	pools, err := d.Client.GetStoragePoolNames()
	is.NoErr(err)
	is.True(!slices.Contains(pools, pool))
	nets, err := d.Client.GetNetworkNames()
	is.NoErr(err)
	is.True(!slices.Contains(nets, "iedemo-br"))
	profiles, err := d.Client.GetProfileNames()
	is.NoErr(err)
	is.True(!slices.Contains(profiles, demoProfile))
	insts, err := d.Client.GetInstanceNames("")
	is.NoErr(err)
	for _, n := range insts {
		is.True(!strings.HasPrefix(n, demoPrefix))
	}
	_, _, err = d.Client.GetImageAlias("artifact/incusexec-demo-busybox")
	is.True(err != nil)
}

// TestDemoInterrupted sends SIGINT to the demo while its tasks run: it
// must exit 130 and remove everything it created all the same.
func TestDemoInterrupted(t *testing.T) {
	is := is.New(t)
	d := incustest.Shared(t)
	pool := incustest.UniqueName("demo")
	cmd := exec.CommandContext(t.Context(), os.Args[0], "--socket", d.Socket, "demo", "--pool", pool)
	cmd.Env = append(os.Environ(), envMain+"=1")
	pipe, err := cmd.StdoutPipe()
	is.NoErr(err)
	var errb strings.Builder
	cmd.Stderr = &errb
	is.NoErr(cmd.Start())
	var lines []string
	sc := bufio.NewScanner(pipe)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if strings.Contains(sc.Text(), "ready in") { // the image: tasks start now
			is.NoErr(cmd.Process.Signal(syscall.SIGINT))
		}
	}
	_ = cmd.Wait()
	t.Logf("stdout:\n%s\nstderr:\n%s", strings.Join(lines, "\n"), errb.String())
	is.Equal(cmd.ProcessState.ExitCode(), exitInterrupted)
	is.True(strings.Contains(strings.Join(lines, "\n"), "cleaned up: "))
	assertDemoGone(t, d, pool)
}

// TestDemoDebian runs the demo on the debootstrapped Debian image
// (systemd readiness, NIC host0).
func TestDemoDebian(t *testing.T) {
	is := is.New(t)
	d := incustest.Shared(t)
	incustest.DebianTarball(t, imagetest.HostSuite()) // skips where it cannot be built
	r := incusexec(t, t.Context(), d, "", "demo", "--debian", "--pool", d.Pool)
	is.Equal(r.code, 0)
	is.True(strings.Contains(r.stdout, `"input pushed by the host" read by demo`))
	is.True(strings.Contains(r.stdout, "done: nothing the demo created is left"))
	_, _, err := d.Client.GetImageAlias("artifact/incusexec-demo-debian-" + imagetest.HostSuite())
	is.True(err != nil)
}
