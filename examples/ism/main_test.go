package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/incusexec/incusexec/executor/incus"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/imagebuild"
	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/incusexec/incusexec/netbridge"
	"github.com/matryer/is"
)

const envMain = "ISM_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(envMain) == "1" {
		main()
	}
	incustest.Main(m)
}

func owned(t *testing.T, d *incustest.Daemon, owner string) []string {
	t.Helper()
	insts, err := d.Client.GetInstancesWithFilter("", []string{"config." + executor.OwnerKey + "=" + owner})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, in := range insts {
		names = append(names, in.Name)
	}
	return names
}

// TestISM runs the gateway twice on a private daemon, as ISM restarts: the
// first run cleans up after a "crashed" predecessor (-clean-network), runs
// its pool and checks once; the second serves until SIGINT and then shuts
// down and removes everything (-cleanup).
func TestISM(t *testing.T) {
	is := is.New(t)
	d := incustest.Shared(t)
	d.BusyboxImage(t)
	owner := incustest.UniqueName("ism-test")
	prefix := incustest.UniqueName("ism") // bridge <prefix>-br: 14 bytes

	// What a crashed run leaves: its bridge, profile and an instance.
	b, err := incus.NewBackend(t.Context(), incus.Config{Client: d.Client, Owner: owner,
		Network: &netbridge.NetworkSpec{Prefix: prefix}, Profile: &netbridge.ProfileSpec{Name: prefix, Pool: d.Pool}})
	is.NoErr(err)
	ex, err := b.Executor(incus.Image{Alias: incustest.BusyboxAlias})
	is.NoErr(err)
	leftover, err := ex.Create(t.Context(), executor.Spec{ID: "crashed"})
	is.NoErr(err)
	b.Close()

	args := []string{"-socket", d.Socket, "-n", "2", "-prefix", prefix, "-owner", owner, "-pool", d.Pool}
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), append(args, "-clean-network", "-once"), &stdout, &stderr)
	t.Logf("first run:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	is.Equal(code, 0)
	out := stdout.String()
	is.True(strings.Contains(out, "-clean-network: instance "+leftover.Name()+", "))
	is.True(strings.Contains(out, "network "+prefix+"-br"))
	is.Equal(strings.Count(out, "pong "+prefix+"-"), 2)                   // both servers answered the gateway
	is.Equal(strings.Count(out, "HOL heap, built on the host"), 2)        // through the read-only heaps mount
	is.True(strings.Contains(out, `the host "theorem proved on `+prefix)) // a session's write, seen on the host
	is.True(strings.Contains(out, "the heaps stay mounted"))
	is.Equal(len(owned(t, d, owner)), 0)
	nets, err := d.Client.GetNetworkNames()
	is.NoErr(err)
	is.True(slices.Contains(nets, prefix+"-br")) // kept for the next start

	cmd := exec.CommandContext(t.Context(), os.Args[0], append(args, "-clean-network", "-cleanup")...)
	cmd.Env = append(os.Environ(), envMain+"=1")
	pipe, err := cmd.StdoutPipe()
	is.NoErr(err)
	var errb strings.Builder
	cmd.Stderr = &errb
	is.NoErr(cmd.Start())
	sc := bufio.NewScanner(pipe)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if strings.Contains(sc.Text(), "serving;") {
			is.Equal(len(owned(t, d, owner)), 2)
			is.NoErr(cmd.Process.Signal(syscall.SIGINT))
		}
	}
	err = cmd.Wait()
	t.Logf("second run:\n%s\nstderr:\n%s", strings.Join(lines, "\n"), errb.String())
	is.NoErr(err)
	all := strings.Join(lines, "\n")
	is.True(strings.Contains(all, "signal received: shutting down"))
	is.True(strings.Contains(all, "stopped and deleted 2 server(s)"))
	is.Equal(len(owned(t, d, owner)), 0)
	nets, err = d.Client.GetNetworkNames()
	is.NoErr(err)
	is.True(!slices.Contains(nets, prefix+"-br"))
	profiles, err := d.Client.GetProfileNames()
	is.NoErr(err)
	is.True(!slices.Contains(profiles, prefix))
	_, _, err = d.Client.GetImageAlias(imagebuild.AliasPrefix + "ism-example-busybox")
	is.True(err != nil)
}
