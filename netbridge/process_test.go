package netbridge_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/incusexec/incusexec/netbridge"
	incus "github.com/lxc/incus/v6/client"
	"github.com/matryer/is"
)

const helperEnv = "NETBRIDGE_TEST_HELPER" // socket|prefix|pool

// TestConcurrentProcessesCreateOneOfEach runs Ensure and EnsureProfile in
// four processes at once (this test binary, re-executed): exactly one of
// them creates each object, and all agree on the subnet.
func TestConcurrentProcessesCreateOneOfEach(t *testing.T) {
	is := is.New(t)
	d := incustest.Shared(t)
	prefix := uniquePrefix()
	cleanupOwner(t, d, newManager(t, d), prefix)

	const procs = 4
	outs := make([]bytes.Buffer, procs)
	errs := make([]error, procs)
	var wg sync.WaitGroup
	for i := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(os.Args[0], "-test.run=^TestEnsureHelperProcess$", "-test.count=1", "-test.v")
			cmd.Env = append(os.Environ(), helperEnv+"="+d.Socket+"|"+prefix+"|"+d.Pool)
			cmd.Stdout, cmd.Stderr = &outs[i], &outs[i]
			errs[i] = cmd.Run()
		}()
	}
	wg.Wait()
	created := map[string]int{}
	subnets := map[string]bool{}
	for i := range procs {
		is.NoErr(errs[i]) // helper process succeeded
		for _, line := range strings.Split(outs[i].String(), "\n") {
			if c, ok := strings.CutPrefix(strings.TrimSpace(line), "CHANGE "); ok && strings.HasPrefix(c, "created ") {
				created[strings.Fields(c)[1]]++
			}
			if s, ok := strings.CutPrefix(strings.TrimSpace(line), "SUBNET "); ok {
				subnets[s] = true
			}
		}
	}
	lost := 0
	for i := range procs {
		lost += strings.Count(outs[i].String(), "created concurrently by another writer")
	}
	t.Logf("creation races lost and recovered from: %d", lost)
	is.Equal(created[netbridge.KindNetwork], 1)
	is.Equal(created[netbridge.KindProfile], 1)
	is.Equal(len(subnets), 1)
}

// TestEnsureHelperProcess is the body of the processes above; it does
// nothing in a normal run.
func TestEnsureHelperProcess(t *testing.T) {
	arg := os.Getenv(helperEnv)
	if arg == "" {
		t.Skip("helper of TestConcurrentProcessesCreateOneOfEach")
	}
	parts := strings.Split(arg, "|")
	c, err := incus.ConnectIncusUnix(parts[0], nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	m := netbridge.New(c, netbridge.Options{Logger: slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	n, err := m.Ensure(ctx, netbridge.NetworkSpec{Prefix: parts[1]})
	if err != nil {
		t.Fatal(err)
	}
	p, err := m.EnsureProfile(ctx, netbridge.ProfileSpec{Name: parts[1] + "-p", Owner: parts[1], Network: n.Name, Pool: parts[2]})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("SUBNET", n.IPv4)
	for _, ch := range append(n.Changes, p.Changes...) {
		fmt.Println("CHANGE", ch)
	}
}
