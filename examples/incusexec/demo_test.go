package main

import (
	"bufio"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/incusexec/incusexec/internal/testimage"
	"github.com/matryer/is"
)

func TestDemoFake(t *testing.T) {
	is := is.New(t)
	r := incusexec(t, t.Context(), nil, "", "demo", "--backend", "fake")
	is.Equal(r.code, 0)
	is.True(strings.Contains(r.stdout, "NO Incus is involved"))
	is.True(strings.Contains(r.stdout, "exit-code"))
	is.True(strings.Contains(r.stdout, "done: nothing the demo created is left"))
}

// TestDemo runs the demo on a daemon that lacks the pool it is told to
// use, so that it creates one and must remove it again, and checks that
// nothing it created is left.
func TestDemo(t *testing.T) {
	is := is.New(t)
	d := incustest.Shared(t)
	pool := incustest.UniqueName("demo")
	r := incusexec(t, t.Context(), d, "", "demo", "--pool", pool)
	is.Equal(r.code, 0)
	assertDemoGone(t, d, pool)
	for _, want := range []string{
		"storage pool " + pool + " created",
		"bridge iedemo-br",
		`"input pushed by the host" read by demo`,
		"after the second Unmount it is gone",
		"done: nothing the demo created is left",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
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
	incustest.DebianTarball(t, testimage.HostSuite()) // skips where it cannot be built
	r := incusexec(t, t.Context(), d, "", "demo", "--debian", "--pool", d.Pool)
	is.Equal(r.code, 0)
	is.True(strings.Contains(r.stdout, `"input pushed by the host" read by demo`))
	is.True(strings.Contains(r.stdout, "done: nothing the demo created is left"))
	_, _, err := d.Client.GetImageAlias("artifact/incusexec-demo-debian-" + testimage.HostSuite())
	is.True(err != nil)
}
