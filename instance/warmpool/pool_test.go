package warmpool_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/instance/warmpool"
	"github.com/incusexec/incusexec/internal/incustest"
	incus "github.com/lxc/incus/v6/client"
	"github.com/lxc/incus/v6/shared/api"
	"github.com/matryer/is"
)

// childEnv makes the test binary a second host process sharing a pool:
// "socket owner pool claims mode", mode "exit" (claim, print, close, exit)
// or "hang" (claim, print, wait to be killed).
const childEnv = "WARMPOOL_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain())
	}
	incustest.Main(m)
}

var busyboxReady = instance.Ready{NIC: "eth0", Family: "inet", Timeout: 2 * time.Minute}

func newPool(c warmpool.Client, m *instance.Manager, name string, size int) (*warmpool.Pool, error) {
	return warmpool.New(warmpool.Config{
		Name: name, Manager: m, Client: c, Size: size, Refill: 2,
		Interval: 300 * time.Millisecond,
		Spec:     instance.Spec{Image: incustest.BusyboxAlias, Ephemeral: true, Ready: busyboxReady},
	})
}

func childMain() int {
	f := strings.Fields(os.Getenv(childEnv))
	socket, owner, name, mode := f[0], f[1], f[2], f[4]
	var claims int
	fmt.Sscan(f[3], &claims)
	c, err := incus.ConnectIncusUnix(socket, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	m, err := instance.New(c, instance.Config{Owner: owner})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	p, err := newPool(c, m, name, 1)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	for range claims {
		wg.Go(func() {
			in, err := p.Claim(ctx)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				fmt.Println("error", err)
				return
			}
			fmt.Println("claimed", in.Name())
		})
	}
	wg.Wait()
	fmt.Println("done")
	if mode == "hang" {
		select {}
	}
	if err := p.Close(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

type env struct {
	d *incustest.Daemon
	m *instance.Manager
}

func setup(t *testing.T) env {
	t.Helper()
	d := incustest.Shared(t)
	d.BusyboxImage(t)
	m, err := instance.New(d.Client, instance.Config{Owner: incustest.UniqueName("wp-")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		m.GC(ctx, instance.GCOptions{})
		m.Close()
	})
	return env{d, m}
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// claimedBy reads the claim label of name on the server.
func claimedBy(t *testing.T, c incus.InstanceServer, name string) string {
	t.Helper()
	inst, _, err := c.GetInstance(name)
	if err != nil {
		t.Fatalf("get %s: %v", name, err)
	}
	return inst.Config[warmpool.LabelClaimed]
}

// waitReady waits until n unclaimed instances of the pool are ready.
func waitReady(t *testing.T, e env, p *warmpool.Pool, n int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		insts, err := e.d.Client.GetInstancesWithFilter(api.InstanceTypeAny, []string{"config." + instance.LabelID + "=" + p.ID()})
		if err != nil {
			t.Fatal(err)
		}
		ready := 0
		for _, in := range insts {
			if in.Config[warmpool.LabelState] == warmpool.StateReady && in.Config[warmpool.LabelClaimed] == "" {
				ready++
			}
		}
		if ready >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool has %d ready instances, want %d", ready, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	m, err := instance.New(nopClient{}, instance.Config{Owner: "o"})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	good := warmpool.Config{Name: "p", Manager: m, Client: nopClient{}, Size: 1, Spec: instance.Spec{Image: "x"}}
	for name, change := range map[string]func(*warmpool.Config){
		"no manager": func(c *warmpool.Config) { c.Manager = nil },
		"bad name":   func(c *warmpool.Config) { c.Name = "a b" },
		"no image":   func(c *warmpool.Config) { c.Spec.Image = "" },
		"spec name":  func(c *warmpool.Config) { c.Spec.Name = "x" },
		"size 0":     func(c *warmpool.Config) { c.Size = 0 },
		"negative":   func(c *warmpool.Config) { c.MaxAge = -1 },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := good
			change(&cfg)
			_, err := warmpool.New(cfg)
			is.New(t).True(errors.Is(err, warmpool.ErrInvalid))
		})
	}
}

func TestConcurrentClaimsNeverDuplicate(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	e := setup(t)
	ctx := ctxFor(t, 4*time.Minute)
	p, err := newPool(e.d.Client, e.m, incustest.UniqueName("gor-"), 3)
	is.NoErr(err)
	waitReady(t, e, p, 3)

	const claims = 8
	var (
		mu    sync.Mutex
		names []string
		wg    sync.WaitGroup
	)
	for range claims {
		wg.Go(func() {
			in, err := p.Claim(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			names = append(names, in.Name())
			mu.Unlock()
		})
	}
	wg.Wait()
	is.Equal(len(names), claims)
	slices.Sort(names)
	is.Equal(len(slices.Compact(slices.Clone(names))), claims) // no instance handed out twice
	for _, n := range names {
		is.Equal(claimedBy(t, e.d.Client, n), p.Holder())
		st, err := e.m.Instance(n).Status(ctx)
		is.NoErr(err)
		is.Equal(st, api.Running) // claimed instances are up
	}
	for _, n := range names {
		is.NoErr(e.m.Instance(n).Delete(ctx))
	}
	is.NoErr(p.Close(ctx))
	left, err := e.m.List(ctx)
	is.NoErr(err)
	is.Equal(left, []string{}) // drained: nothing left
	_, err = p.Claim(ctx)
	is.True(errors.Is(err, warmpool.ErrClosed))
}

// startChild starts a second process on the same pool, waits until its
// pool is open and returns its output lines reader.
func startChild(t *testing.T, e env, name string, claims int, mode string) (*exec.Cmd, io.WriteCloser, *bufio.Reader) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %s %d %s", childEnv, e.d.Socket, e.m.Owner(), name, claims, mode))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	r := bufio.NewReader(out)
	line, err := r.ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("child: %q, %v", line, err)
	}
	return cmd, in, r
}

// childClaims reads the child's claimed names until "done".
func childClaims(t *testing.T, r *bufio.Reader) []string {
	t.Helper()
	var names []string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("child output: %v", err)
		}
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "claimed":
			names = append(names, f[1])
		case len(f) == 1 && f[0] == "done":
			return names
		default:
			t.Fatalf("child: %s", line)
		}
	}
}

func TestTwoProcessesNeverClaimTheSameInstance(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	e := setup(t)
	ctx := ctxFor(t, 4*time.Minute)
	name := incustest.UniqueName("proc-")
	p, err := newPool(e.d.Client, e.m, name, 4)
	is.NoErr(err)
	waitReady(t, e, p, 4)
	cmd, stdin, out := startChild(t, e, name, 3, "exit")

	// Both processes go for the same four warm instances at once.
	const claims = 3
	var (
		mu   sync.Mutex
		ours []string
		wg   sync.WaitGroup
	)
	_, err = io.WriteString(stdin, "go\n")
	is.NoErr(err)
	for range claims {
		wg.Go(func() {
			in, err := p.Claim(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			ours = append(ours, in.Name())
			mu.Unlock()
		})
	}
	theirs := childClaims(t, out)
	wg.Wait()
	is.NoErr(cmd.Wait())
	is.Equal(len(ours), claims)
	is.Equal(len(theirs), 3)
	all := slices.Concat(ours, theirs)
	slices.Sort(all)
	is.Equal(len(slices.Compact(slices.Clone(all))), len(all)) // no instance handed out twice
	for _, n := range ours {
		is.Equal(claimedBy(t, e.d.Client, n), p.Holder())
	}
	for _, n := range theirs { // the child's claims name the child
		h := claimedBy(t, e.d.Client, n)
		is.True(h != "" && h != p.Holder())
	}
	for _, n := range all {
		is.NoErr(e.m.Instance(n).Delete(ctx))
	}
	is.NoErr(p.Close(ctx))
	left, err := e.m.List(ctx)
	is.NoErr(err)
	is.Equal(left, []string{})
}

func TestKilledHolderClaimsAreReclaimed(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	e := setup(t)
	ctx := ctxFor(t, 4*time.Minute)
	name := incustest.UniqueName("kill-")
	p, err := newPool(e.d.Client, e.m, name, 2)
	is.NoErr(err)
	waitReady(t, e, p, 2)
	cmd, stdin, out := startChild(t, e, name, 2, "hang")
	_, err = io.WriteString(stdin, "go\n")
	is.NoErr(err)
	theirs := childClaims(t, out)
	is.Equal(len(theirs), 2)

	// A live holder's claims are kept ...
	deleted, err := p.GC(ctx)
	is.NoErr(err)
	is.Equal(len(deleted), 0)
	// ... a killed one's are reclaimed.
	is.NoErr(cmd.Process.Kill())
	var exit *exec.ExitError
	is.True(errors.As(cmd.Wait(), &exit))
	deleted, err = p.GC(ctx)
	is.NoErr(err)
	for _, n := range theirs { // (the child's refill may have left one more)
		is.True(slices.Contains(deleted, n))
		_, err := e.m.Get(ctx, n)
		is.True(errors.Is(err, instance.ErrNotFound))
	}
	// The pool itself still serves.
	in, err := p.Claim(ctx)
	is.NoErr(err)
	is.NoErr(in.Delete(ctx))
	is.NoErr(p.Close(ctx))
	left, err := e.m.List(ctx)
	is.NoErr(err)
	is.Equal(left, []string{}) // the dead child's unclaimed instance went too
}

// nopClient satisfies instance.Client and warmpool.Client for tests of bad
// configuration, which never reach the server.
type nopClient struct{ instance.Client }

func (nopClient) GetEvents() (*incus.EventListener, error) { return nil, errors.New("no events") }
func (nopClient) UpdateInstance(string, api.InstancePut, string) (incus.Operation, error) {
	return nil, errors.New("no server")
}

// cpuShare reads the CPU share of the instance's own cgroup
// (lxc.payload.NAME, above whatever its init made inside), through its
// init's /proc entry, as a whole percentage of the default: cpu.weight/100 under
// cgroup v2, cpu.shares/1024 where the cpu controller is still v1.
func cpuShare(t *testing.T, c incus.InstanceServer, name string) float64 {
	t.Helper()
	st, _, err := c.GetInstanceState(name)
	if err != nil {
		t.Fatalf("state of %s: %v", name, err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", st.Pid))
	if err != nil {
		t.Fatal(err)
	}
	var file string
	var unit float64
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		if f[1] == "" && file == "" { // v2, unless v1 has the controller
			file, unit = filepath.Join("/sys/fs/cgroup", payload(t, f[2]), "cpu.weight"), 100
		}
		if slices.Contains(strings.Split(f[1], ","), "cpu") {
			file, unit = filepath.Join("/sys/fs/cgroup", f[1], payload(t, f[2]), "cpu.shares"), 1024
			break
		}
	}
	if file == "" {
		t.Fatalf("%s: no cpu cgroup in %q", name, b)
	}
	w, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(string(w)), 64)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return math.Round(100 * v / unit) // cgroup v1 rounds 1% of 1024 down to 10
}

// payload cuts a cgroup path after its lxc.payload.* component.
func payload(t *testing.T, path string) string {
	parts := strings.Split(path, "/")
	for len(parts) > 0 && !strings.HasPrefix(parts[len(parts)-1], "lxc.payload.") {
		parts = parts[:len(parts)-1]
	}
	if len(parts) == 0 {
		t.Fatalf("cgroup %s is not under lxc.payload.*", path)
	}
	return strings.Join(parts, "/")
}

// TestBackgroundSparesWaitAtLowestCPUWeight: a Background pool's spares
// run at 1% of the default CPU share, and the claim gives the claimer the default weight
// (the Spec sets none) or the Spec's own allowance.
func TestBackgroundSparesWaitAtLowestCPUWeight(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for _, tc := range []struct {
		name, specAllowance string
		wantClaimed         float64 // percent of the default share
	}{
		{"profile default", "", 100},
		{"spec allowance", "50%", 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			ctx := ctxFor(t, 3*time.Minute)
			spec := instance.Spec{Image: incustest.BusyboxAlias, Ephemeral: true, Ready: busyboxReady}
			if tc.specAllowance != "" {
				spec.Config = map[string]string{warmpool.KeyCPUAllowance: tc.specAllowance}
			}
			p, err := warmpool.New(warmpool.Config{
				Name: incustest.UniqueName("bg-"), Manager: e.m, Client: e.d.Client, Size: 1,
				Interval: 300 * time.Millisecond, Spec: spec, Background: true,
			})
			is.NoErr(err)
			defer p.Close(ctx)
			waitReady(t, e, p, 1)
			insts, err := e.d.Client.GetInstancesWithFilter(api.InstanceTypeAny, []string{"config." + instance.LabelID + "=" + p.ID()})
			is.NoErr(err)
			is.Equal(len(insts), 1)
			is.Equal(insts[0].Config[warmpool.KeyCPUAllowance], warmpool.BackgroundAllowance)
			is.Equal(cpuShare(t, e.d.Client, insts[0].Name), 1.0) // the spare waits at the lowest weight

			in, err := p.Claim(ctx)
			is.NoErr(err)
			defer in.Delete(ctx)
			is.Equal(in.Name(), insts[0].Name)
			inst, _, err := e.d.Client.GetInstance(in.Name())
			is.NoErr(err)
			got, set := inst.Config[warmpool.KeyCPUAllowance]
			is.Equal(set, tc.specAllowance != "")
			is.Equal(got, tc.specAllowance)
			is.Equal(cpuShare(t, e.d.Client, in.Name()), tc.wantClaimed) // applied live
		})
	}
}
