package reliability_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mountincus "github.com/incusexec/incusexec/mount/incus"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/incusexec/incusexec/internal/reliability"
	"github.com/incusexec/incusexec/mount"
	"github.com/incusexec/incusexec/netbridge"
	incus "github.com/lxc/incus/v6/client"
	"github.com/matryer/is"
)

// childEnv makes the test binary a host process that the test kills: its
// value is the JSON of a childJob.
const childEnv = "RELIABILITY_CHILD"

// childJob is what the killed host does, in phases: ensure its bridge and
// profile, launch an instance, run a command, push a file, mount a host
// directory into its own instance and into the parent's long-lived one,
// stop its instance. It announces each phase on stdout before starting it.
type childJob struct {
	Socket, Owner, Prefix, Pool string
	Shared                      string // the parent's instance
	Root, Source                string // allowlist root and mount source
	// Mode "run" does what `incusexec run` does instead (runChildRun).
	Mode string
}

var phases = []string{"network", "launch", "exec", "push", "mount", "stop"}

// phaseLength is about how long each phase takes on the test machine.
var phaseLength = map[string]time.Duration{
	"network": 400 * time.Millisecond, "launch": 1200 * time.Millisecond, "exec": 1000 * time.Millisecond,
	"push": 250 * time.Millisecond, "mount": 150 * time.Millisecond, "stop": 3000 * time.Millisecond,
}

func childMain() int {
	var job childJob
	if err := json.Unmarshal([]byte(os.Getenv(childEnv)), &job); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	if err := runChild(job); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	fmt.Println("done")
	time.Sleep(time.Hour) // the parent kills it
	return 0
}

func runChild(job childJob) error {
	if job.Mode == "run" {
		return runChildRun(job)
	}
	ctx := context.Background()
	phase := func(p string) { fmt.Println(p) }
	c, err := incus.ConnectIncusUnix(job.Socket, nil)
	if err != nil {
		return err
	}
	phase("network")
	nb := netbridge.New(c, netbridge.Options{})
	n, err := nb.Ensure(ctx, netbridge.NetworkSpec{Prefix: job.Prefix, Owner: job.Owner, Isolation: netbridge.IsolationStrict})
	if err != nil {
		return err
	}
	p, err := nb.EnsureProfile(ctx, netbridge.ProfileSpec{Name: job.Prefix, Owner: job.Owner, Network: n.Name, Pool: job.Pool, Processes: 500})
	if err != nil {
		return err
	}
	phase("launch")
	im, err := instance.New(c, instance.Config{Owner: job.Owner, Prefix: job.Owner + "-", StopGrace: 10 * time.Second})
	if err != nil {
		return err
	}
	in, err := im.Create(ctx, instance.Spec{Image: incustest.BusyboxAlias, Profiles: []string{p.Name}})
	if err != nil {
		return err
	}
	phase("exec")
	if _, err := in.Exec(ctx, executor.Cmd{Args: []string{"sh", "-c", "echo hi; sleep 1; echo bye"}}); err != nil {
		return err
	}
	phase("push")
	if err := in.Push(ctx, "/tmp/data", bytes.NewReader(make([]byte, 16<<20)), executor.FileOptions{}); err != nil {
		return err
	}
	phase("mount")
	mm, err := mountincus.New(mountincus.Config{Client: c, AllowedRoots: []string{job.Root}, Owner: job.Owner})
	if err != nil {
		return err
	}
	if _, err := mm.Acquire(ctx, in.Name(), "work", job.Source, executor.MountOptions{ReadOnly: true}); err != nil {
		return err
	}
	if _, err := mm.Acquire(ctx, job.Shared, "shared-"+job.Owner, job.Source, executor.MountOptions{}); err != nil {
		return err
	}
	phase("stop")
	return in.Stop(ctx)
}

// killRound is the outcome of one round.
type killRound struct {
	target, killedIn string
	delay            time.Duration
	leaks            []string
	// incusBridge is set when the round hit Incus's own leak: a network
	// creation cut short by the client's death leaves the bridge and its
	// dnsmasq running while the network stays Pending, and deleting a
	// Pending network does not stop them (see RELIABILITY.md).
	incusBridge bool
}

// TestSIGKILLAtRandomPoints kills a host process at a random moment of a
// random phase, then cleans up after it as a restarted host would (instance
// GC by owner, release of the dead owner's mount holds, netbridge Cleanup)
// and checks that nothing owned by the dead process is left and that new
// managers work on the same objects.
func TestSIGKILLAtRandomPoints(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	d := incustest.Shared(t)
	d.BusyboxImage(t)
	ctx := ctxFor(t, 60*time.Minute)

	// The parent's long-lived instance, into which children mount.
	parent, err := instance.New(d.Client, instance.Config{Owner: incustest.UniqueName("parent-")})
	is.NoErr(err)
	t.Cleanup(func() { parent.Close() })
	shared, err := parent.Create(ctx, instance.Spec{Image: incustest.BusyboxAlias})
	is.NoErr(err)
	t.Cleanup(func() { _ = shared.Delete(context.Background()) })
	root := t.TempDir()
	source := filepath.Join(root, "src")
	is.NoErr(os.Mkdir(source, 0o755))
	is.NoErr(os.WriteFile(filepath.Join(source, "f"), []byte("hello\n"), 0o644))

	rounds := reliability.Rounds(len(phases))
	var results []killRound
	for i := range rounds {
		target := phases[i%len(phases)]
		if reliability.Soak() {
			target = phases[rand.IntN(len(phases))]
		}
		if p := os.Getenv("RELIABILITY_PHASE"); p != "" {
			target = p
		}
		r := killOnce(t, d, shared.Name(), root, source, target)
		results = append(results, r)
		t.Logf("round %d: target %s, killed %v into %s, leaks %d, Incus bridge leak %v", i+1, r.target, r.delay, r.killedIn, len(r.leaks), r.incusBridge)
		for _, l := range r.leaks {
			t.Errorf("round %d (killed in %s): leaked %s", i+1, r.killedIn, l)
		}
		// New managers work on the objects the dead process touched.
		checkWorks(t, d, shared, root, source)
	}
	in := map[string]int{}
	leaks, incusBridges := 0, 0
	for _, r := range results {
		in[r.killedIn]++
		leaks += len(r.leaks)
		if r.incusBridge {
			incusBridges++
		}
	}
	t.Logf("SUMMARY rounds=%d killed-in=%v leaks=%d incus-pending-bridge-leaks=%d", len(results), in, leaks, incusBridges)
}

// killOnce runs one child, kills it a random delay into phase target, and
// cleans up after it.
func killOnce(t *testing.T, d *incustest.Daemon, shared, root, source, target string) killRound {
	t.Helper()
	is := is.New(t)
	owner := incustest.UniqueName("k")
	job := childJob{Socket: d.Socket, Owner: owner, Prefix: owner, Pool: d.Pool, Shared: shared, Root: root, Source: source}
	b, err := json.Marshal(job)
	is.NoErr(err)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(b))
	out, err := cmd.StdoutPipe()
	is.NoErr(err)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	is.NoErr(cmd.Start())

	var mu sync.Mutex
	current := ""
	reached := make(chan struct{})
	var once sync.Once
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			mu.Lock()
			current = sc.Text()
			mu.Unlock()
			if current == target || current == "done" {
				once.Do(func() { close(reached) })
			}
		}
		once.Do(func() { close(reached) })
	}()
	<-reached
	// A delay up to about the phase's length here lands anywhere in it,
	// and sometimes in the next one.
	delay := time.Duration(rand.Int64N(int64(phaseLength[target])))
	time.Sleep(delay)
	mu.Lock()
	killedIn := current
	mu.Unlock()
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if killedIn != "done" && stderr.Len() > 0 {
		t.Logf("child stderr: %s", stderr.String())
	}
	if strings.Contains(stderr.String(), "child:") {
		t.Errorf("child failed before it was killed: %s", stderr.String())
	}

	// What a restarted host does for the dead owner.
	if v, err := time.ParseDuration(os.Getenv("RELIABILITY_CLEANUP_DELAY")); err == nil {
		time.Sleep(v)
	}
	ctx := ctxFor(t, 3*time.Minute)
	im, err := instance.New(d.Client, instance.Config{Owner: owner})
	is.NoErr(err)
	defer im.Close()
	if _, err := im.GC(ctx, instance.GCOptions{}); err != nil {
		t.Errorf("GC of %s: %v", owner, err)
	}
	// The listing right after the one GC must be empty: an instance still
	// being created or deleted is listed without its configuration (so
	// without the owner label), and only its name tells whose it is.
	var afterGC []string
	for _, l := range named(t, d, owner+"-") {
		afterGC = append(afterGC, "instance right after GC: "+l)
	}
	mm, err := mountincus.New(mountincus.Config{Client: d.Client, AllowedRoots: []string{root}, Owner: "cleanup"})
	is.NoErr(err)
	ms, err := mm.Mounts(ctx, shared)
	is.NoErr(err)
	for _, m := range ms {
		for _, h := range m.Holders {
			if h.Owner == owner {
				if err := mm.Release(ctx, mount.Handle{Instance: shared, Alias: m.Alias, Path: m.Path, Holder: h.ID}); err != nil {
					t.Errorf("release %s of %s: %v", m.Alias, owner, err)
				}
			}
		}
	}
	if _, err := netbridge.New(d.Client, netbridge.Options{}).Cleanup(ctx, owner); err != nil {
		t.Errorf("netbridge cleanup of %s: %v", owner, err)
	}
	r := killRound{target: target, killedIn: killedIn, delay: delay, leaks: afterGC}
	bridge := owner + "-br"
	if killedIn == "network" {
		// Incus may still be bringing the cut-short network up: give
		// its bridge and dnsmasq time to show before looking.
		time.Sleep(2 * time.Second)
	}
	for _, l := range ownedBy(t, d.Client, owner, shared) {
		if strings.HasPrefix(l, "network "+bridge+" (managed false") && killedIn == "network" {
			r.incusBridge = true
			continue
		}
		r.leaks = append(r.leaks, l)
	}
	if killedIn == "network" && removeUnmanagedBridge(t, d, bridge) {
		r.incusBridge = true
	}
	// Whatever the phase, nothing of the owner's bridge may stay in the
	// host's firewall.
	chains, err := incustest.FirewallChains(bridge)
	if err != nil {
		t.Errorf("nftables chains of %s: %v", bridge, err)
	}
	for _, c := range chains {
		r.leaks = append(r.leaks, "nftables chain "+c)
	}
	return r
}

// removeUnmanagedBridge removes what Incus left of a network whose creation
// was cut short: the bridge interface, the dnsmasq serving it (found by its
// command line naming the bridge and the daemon's directory) and its
// nftables chains.
func removeUnmanagedBridge(t *testing.T, d *incustest.Daemon, bridge string) (found bool) {
	t.Helper()
	for quiet := 0; quiet < 10; quiet++ {
		procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, p := range procs {
			b, err := os.ReadFile(p)
			if err != nil {
				continue
			}
			cmd := strings.ReplaceAll(string(b), "\x00", " ")
			if strings.HasPrefix(cmd, "dnsmasq ") && strings.Contains(cmd, "--interface="+bridge+" ") && strings.Contains(cmd, d.Dir+"/") {
				pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
				_ = syscall.Kill(pid, syscall.SIGTERM)
				found, quiet = true, 0
			}
		}
		if _, err := net.InterfaceByName(bridge); err == nil {
			if out, err := exec.Command("ip", "link", "delete", bridge).CombinedOutput(); err != nil {
				t.Logf("ip link delete %s: %v: %s", bridge, err, out)
			}
			found, quiet = true, 0
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Its firewall chains stay in the host's ruleset too.
	chains, err := incustest.FirewallChains(bridge)
	if err != nil {
		t.Errorf("nftables chains of %s: %v", bridge, err)
	}
	if len(chains) > 0 {
		found = true
		if err := incustest.ClearFirewall(bridge); err != nil {
			t.Errorf("%v", err)
		}
	}
	return found
}

// ownedBy lists everything on the server that still belongs to owner:
// instances, networks, profiles, ACLs and images with its label, and holds
// or devices of its mounts on the instance shared.
func ownedBy(t *testing.T, c incus.InstanceServer, owner, shared string) []string {
	t.Helper()
	var left []string
	insts, err := c.GetInstances("")
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range insts {
		if in.Config[executor.OwnerKey] == owner {
			left = append(left, "instance "+in.Name)
		}
		for name, dev := range in.Devices {
			if in.Name == shared && strings.HasPrefix(name, mountincus.DevicePrefix) && dev["source"] != "" {
				left = append(left, fmt.Sprintf("device %s of %s", name, in.Name))
			}
		}
		if in.Name == shared {
			for k := range in.Config {
				if strings.HasPrefix(k, mountincus.ConfigPrefix) {
					left = append(left, fmt.Sprintf("mount record %s of %s", k, in.Name))
				}
			}
		}
	}
	nets, err := c.GetNetworks()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nets {
		if n.Config[executor.OwnerKey] == owner || strings.HasPrefix(n.Name, owner+"-") {
			left = append(left, fmt.Sprintf("network %s (managed %v, status %s, owner %q)", n.Name, n.Managed, n.Status, n.Config[executor.OwnerKey]))
		}
	}
	profiles, err := c.GetProfiles()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range profiles {
		if p.Config[executor.OwnerKey] == owner {
			left = append(left, "profile "+p.Name)
		}
	}
	acls, err := c.GetNetworkACLs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range acls {
		if a.Config[executor.OwnerKey] == owner {
			left = append(left, "acl "+a.Name)
		}
	}
	vols, err := c.GetStoragePoolVolumes(mustPool(t, c))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vols {
		if v.Type == "container" && strings.HasPrefix(v.Name, owner+"-") {
			if _, _, err := c.GetInstance(v.Name); err != nil {
				left = append(left, "volume "+v.Name+" without instance")
			}
		}
	}
	return left
}

func mustPool(t *testing.T, c incus.InstanceServer) string {
	t.Helper()
	p, _, err := c.GetProfile("default")
	if err != nil {
		t.Fatal(err)
	}
	return p.Devices["root"]["pool"]
}

// checkWorks shows that new managers work on what a killed process touched:
// the shared instance runs commands and takes and gives back a mount.
func checkWorks(t *testing.T, d *incustest.Daemon, shared *instance.Instance, root, source string) {
	t.Helper()
	is := is.New(t)
	ctx := ctxFor(t, 2*time.Minute)
	im, err := instance.New(d.Client, instance.Config{Owner: incustest.UniqueName("after-")})
	is.NoErr(err)
	defer im.Close()
	mm, err := mountincus.New(mountincus.Config{Client: d.Client, AllowedRoots: []string{root}, Owner: "after"})
	is.NoErr(err)
	h, err := mm.Acquire(ctx, shared.Name(), "after", source, executor.MountOptions{ReadOnly: true})
	is.NoErr(err)
	var out bytes.Buffer
	code, err := im.Instance(shared.Name()).Exec(ctx, executor.Cmd{Args: []string{"cat", h.Path + "/f"}, Stdout: &out})
	is.NoErr(err)
	is.Equal(code, 0)
	is.Equal(out.String(), "hello\n")
	is.NoErr(mm.Release(ctx, h))
}
