package incustest_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/lxc/incus/v6/shared/api"
	"github.com/matryer/is"
)

// TestChildLeavesDaemon is the child half of TestSweepAfterKill: it starts a
// daemon with a running container, reports its directory and waits to be
// killed.
func TestChildLeavesDaemon(t *testing.T) {
	if os.Getenv("INCUSTEST_CHILD") != "1" {
		t.Skip("child process of TestSweepAfterKill")
	}
	ctx := context.Background()
	d, err := incustest.Start(ctx, incustest.Options{Pool: "dir"})
	if err != nil {
		t.Fatal(err)
	}
	d.BusyboxImage(t)
	op, err := d.Client.CreateInstance(api.InstancesPost{
		Name: "orphan", Source: api.InstanceSource{Type: "image", Alias: incustest.BusyboxAlias}, Start: true,
	})
	if err == nil {
		err = op.WaitContext(ctx)
	}
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("DIR=%s NET=%s\n", d.Dir, d.Network)
	time.Sleep(time.Minute)
}

// TestSweepAfterKill kills a test process that holds a daemon and a running
// container, then checks that the next Start sweeps all it left: processes,
// bridge, the bridge's nftables chains, directory.
func TestSweepAfterKill(t *testing.T) {
	is := is.New(t)
	incustest.Shared(t) // skips or fails like every integration test
	cmd := exec.Command(os.Args[0], "-test.run=^TestChildLeavesDaemon$", "-test.v")
	cmd.Env = append(os.Environ(), "INCUSTEST_CHILD=1")
	out, err := cmd.StdoutPipe()
	is.NoErr(err)
	is.NoErr(cmd.Start())
	var dir, network string
	s := bufio.NewScanner(out)
	for s.Scan() {
		if _, err := fmt.Sscanf(s.Text(), "DIR=%s NET=%s", &dir, &network); err == nil {
			break
		}
	}
	is.True(dir != "")
	is.NoErr(cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	is.True(referencing(dir) > 0) // the kill left the daemon behind
	chains, err := incustest.FirewallChains(network)
	is.NoErr(err)
	is.True(len(chains) > 0) // and its bridge's firewall in the host's ruleset

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d, err := incustest.Start(ctx, incustest.Options{Pool: "dir", NoNetwork: true})
	is.NoErr(err)
	is.NoErr(d.Stop(ctx))

	is.Equal(referencing(dir), 0)
	_, err = os.Stat(dir)
	is.True(os.IsNotExist(err))
	_, err = os.Stat(filepath.Join("/sys/class/net", network))
	is.True(os.IsNotExist(err))
	chains, err = incustest.FirewallChains(network)
	is.NoErr(err)
	is.Equal(chains, []string(nil))
}

// referencing counts live processes whose command line names dir or whose
// INCUS_DIR is dir.
func referencing(dir string) int {
	n := 0
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		cmd, _ := os.ReadFile(filepath.Join(p, "cmdline"))
		env, _ := os.ReadFile(filepath.Join(p, "environ"))
		stat, _ := os.ReadFile(filepath.Join(p, "stat"))
		if strings.Contains(string(stat), ") Z") {
			continue
		}
		if strings.Contains(string(cmd), dir) || strings.Contains("\x00"+string(env)+"\x00", "\x00INCUS_DIR="+dir+"\x00") {
			n++
		}
	}
	return n
}
