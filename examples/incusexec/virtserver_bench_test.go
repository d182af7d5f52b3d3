package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/matryer/is"
)

// The virt-server benchmark (issue 16): the same autopkgtest run against
// the stock autopkgtest-virt-incus and against autopkgtest-virt-incusexec,
// side by side. Run it with
//
//	INCUSEXEC_BENCH_VIRTSERVER=1 go test -count=1 -timeout 60m -v -run 'TestBenchVirtServer$' ./examples/incusexec/
const envBenchVirtServer = "INCUSEXEC_BENCH_VIRTSERVER"

// timingShimName is the name under which the test binary sits between
// autopkgtest and a virt server, timing each protocol command into the
// file named by envTimings.
const (
	timingShimName = "avs-timing-shim"
	envTimings     = "INCUSEXEC_AVS_TIMINGS"
	// execTimerName: the shim puts the test binary under this name (beside
	// itself) in front of the server's execute command, timing each testbed
	// command autopkgtest runs into the same file as "execute SECONDS".
	execTimerName = "avs-exec-timer"
)

// execTimer runs argv[1:] with the caller's stdio and appends its wall time
// to the timings file argv[0]; it exits with the command's status.
func execTimer(argv []string) int {
	if len(argv) < 2 {
		fmt.Fprintln(os.Stderr, "avs-exec-timer: usage: TIMINGS COMMAND...")
		return 255
	}
	cmd := exec.Command(argv[1], argv[2:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	start := time.Now()
	err := cmd.Run()
	secs := time.Since(start).Seconds()
	if log, lerr := os.OpenFile(argv[0], os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); lerr == nil {
		fmt.Fprintf(log, "execute %.3f\n", secs)
		log.Close()
	}
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() >= 0 {
			return ee.ExitCode()
		}
		fmt.Fprintln(os.Stderr, "avs-exec-timer:", err)
		return 255
	}
	return 0
}

// timingShim runs the server argv, passes the protocol through and
// appends "command seconds" per command to $INCUSEXEC_AVS_TIMINGS.
func timingShim(argv []string) int {
	if len(argv) == 0 {
		fmt.Fprintln(os.Stderr, "avs-timing-shim: no server")
		return 1
	}
	// autopkgtest closes its end before quit: a lost reply must not kill
	// the shim with SIGPIPE.
	signal.Ignore(syscall.SIGPIPE)
	log, err := os.OpenFile(os.Getenv(envTimings), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, "avs-timing-shim:", err)
		return 1
	}
	defer log.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stderr = os.Stderr
	toServer, _ := cmd.StdinPipe()
	fromServer, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "avs-timing-shim:", err)
		return 1
	}
	replies := bufio.NewReader(fromServer)
	greeting, _ := replies.ReadString('\n')
	os.Stdout.WriteString(greeting)
	requests := bufio.NewReader(os.Stdin)
	for {
		req, err := requests.ReadString('\n')
		if err != nil {
			break
		}
		start := time.Now()
		io.WriteString(toServer, req)
		rep, err := replies.ReadString('\n')
		if f := strings.Fields(req); len(f) > 0 {
			fmt.Fprintf(log, "%s %.3f\n", f[0], time.Since(start).Seconds())
		}
		if strings.TrimSpace(req) == "print-execute-command" && strings.HasPrefix(rep, "ok ") {
			// Time every testbed command: the timer goes first.
			timer := filepath.Join(filepath.Dir(os.Args[0]), execTimerName)
			rep = "ok " + url.PathEscape(timer) + "," + url.PathEscape(log.Name()) + "," + strings.TrimPrefix(rep, "ok ")
		}
		os.Stdout.WriteString(rep)
		if err != nil {
			break
		}
	}
	toServer.Close()
	if err := cmd.Wait(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		return 1
	}
	return 0
}

// benchTests: several tests, one of which breaks the testbed (a revert).
var benchTests = map[string]string{
	"debian/tests/control": `Tests: one two three
Depends:

Tests: user
Depends:

Tests: breaks
Depends:
Restrictions: breaks-testbed, needs-root

Tests: after
Depends:
Restrictions: needs-root
`,
	"debian/tests/one":    "#!/bin/sh\nset -e\nfor i in 1 2 3; do date >/dev/null; done\necho one\n",
	"debian/tests/two":    "#!/bin/sh\nset -e\necho two > \"$AUTOPKGTEST_ARTIFACTS/two\"\n",
	"debian/tests/three":  "#!/bin/sh\nset -e\nls / >/dev/null\necho three\n",
	"debian/tests/user":   "#!/bin/sh\nset -e\ntest \"$(id -u)\" -ge 1000\n",
	"debian/tests/breaks": "#!/bin/sh\nset -e\ntouch /etc/broken-by-test\n",
	"debian/tests/after":  "#!/bin/sh\nset -e\ntest ! -e /etc/broken-by-test\n",
}

type benchResult struct {
	total   time.Duration
	busy    float64 // share of the machine's CPU time spent busy during the run
	cmds    map[string][]float64
	execute []float64 // seconds per execute-command run of `true`
}

func sum(xs []float64) float64 {
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s
}

// serverSum is the time spent in virt-server protocol commands.
func (r benchResult) serverSum() float64 {
	s := 0.0
	for name, xs := range r.cmds {
		if name != "execute" {
			s += sum(xs)
		}
	}
	return s
}

func mean(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64{}, xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// busyCPU is the share of CPU time the machine spent busy over d.
func busyCPU(d time.Duration) float64 {
	b0, a0 := cpuTimes()
	time.Sleep(d)
	return busySince(b0, a0)
}

// busySince is the share of CPU time the machine spent busy since
// cpuTimes returned b0 and a0.
func busySince(b0, a0 float64) float64 {
	b1, a1 := cpuTimes()
	if a1 <= a0 {
		return 0
	}
	return (b1 - b0) / (a1 - a0)
}

// cpuTimes reads the machine's busy and total CPU time from /proc/stat.
func cpuTimes() (busy, all float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
	for i, x := range f[1:] {
		v, _ := strconv.ParseFloat(x, 64)
		all += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, all
}

// settle waits (up to a minute) until the machine is quiet: the previous
// run's deletions go on in the kernel (a btrfs subvolume's cleanup) after
// its server has quit, and would weigh on the next run, whichever it is.
func settle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for busyCPU(time.Second) > 0.1 && time.Now().Before(deadline) {
	}
}

// runBenchAutopkgtest runs the bench suite against server (argv after
// "--"), through the timing shim unless shim is "" (a plain run: only its
// total counts).
func runBenchAutopkgtest(t *testing.T, env []string, shim string, server []string) benchResult {
	t.Helper()
	is := is.New(t)
	settle(t)
	work := t.TempDir()
	src := filepath.Join(work, "ietest")
	writeTree(t, src, apkgTests)  // control file, changelog, rules
	writeTree(t, src, benchTests) // the bench's own tests
	timings := filepath.Join(work, "timings")
	args := []string{"--output-dir", filepath.Join(work, "out"), "--no-built-binaries", src + "/", "--"}
	if shim != "" {
		args = append(args, shim)
	}
	args = append(args, server...)
	cmd := exec.Command("autopkgtest", args...)
	cmd.Env = append(append(os.Environ(), env...), envTimings+"="+timings)
	start := time.Now()
	b0, a0 := cpuTimes()
	b, err := cmd.CombinedOutput()
	total := time.Since(start)
	busy := busySince(b0, a0)
	if err != nil {
		t.Logf("autopkgtest: %v\n%s", err, b)
	}
	is.NoErr(err) // every bench test passes on both servers
	r := benchResult{total: total, busy: busy, cmds: map[string][]float64{}}
	if shim == "" {
		return r
	}
	f, err := os.ReadFile(timings)
	is.NoErr(err)
	for _, line := range strings.Split(strings.TrimSpace(string(f)), "\n") {
		name, secs, _ := strings.Cut(line, " ")
		v, err := strconv.ParseFloat(secs, 64)
		is.NoErr(err)
		r.cmds[name] = append(r.cmds[name], v)
	}
	return r
}

// executeOverhead opens a testbed by speaking the protocol to server, runs
// `true` n times through its execute command, right after open, and
// returns the times (the first ones run beside our server's spare boot).
func executeOverhead(t *testing.T, env []string, server []string, n int) []float64 {
	t.Helper()
	is := is.New(t)
	settle(t)
	cmd := exec.Command(server[0], server[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	in, _ := cmd.StdinPipe()
	outp, _ := cmd.StdoutPipe()
	is.NoErr(cmd.Start())
	r := bufio.NewReader(outp)
	ask := func(req string) string {
		if req != "" {
			io.WriteString(in, req+"\n")
		}
		rep, err := r.ReadString('\n')
		is.NoErr(err)
		is.True(strings.HasPrefix(rep, "ok"))
		return strings.TrimSpace(strings.TrimPrefix(rep, "ok"))
	}
	ask("")
	ask("open")
	var argv []string
	for _, a := range strings.Split(ask("print-execute-command"), ",") {
		u, err := url.PathUnescape(a)
		is.NoErr(err)
		argv = append(argv, u)
	}
	var times []float64
	for i := 0; i < n; i++ {
		c := exec.Command(argv[0], append(argv[1:], "true")...)
		c.Env = cmd.Env
		start := time.Now()
		b, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("execute command: %v: %s", err, b)
		}
		times = append(times, time.Since(start).Seconds())
	}
	ask("close")
	io.WriteString(in, "quit\n")
	in.Close()
	is.NoErr(cmd.Wait())
	return times
}

// buildServer builds the reference binary and the execute helper into a
// new directory, with the autopkgtest-virt-incusexec name, as make install
// leaves them: the bench times what is installed, not the test binary.
func buildServer(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	b, err := exec.Command("go", "build", "-o", filepath.Join(dir, "incusexec"), "github.com/incusexec/incusexec/examples/incusexec").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	withExecHelper(t, dir)
	if err := os.Symlink("incusexec", filepath.Join(dir, virtServerName)); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestBenchVirtServer(t *testing.T) {
	if os.Getenv(envBenchVirtServer) == "" {
		t.Skip("set " + envBenchVirtServer + "=1 to run the virt-server benchmark")
	}
	needTool(t, "autopkgtest")
	needTool(t, "autopkgtest-virt-incus")
	d := incustest.Shared(t)
	image := d.DebianBuildImage(t)
	profile := d.DebianProfile(t)
	bin := t.TempDir()
	self, _ := os.Executable()
	shim := filepath.Join(bin, timingShimName)
	if err := os.Symlink(self, shim); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(self, filepath.Join(bin, execTimerName)); err != nil {
		t.Fatal(err)
	}
	stockEnv := []string{"INCUS_DIR=" + d.Dir}
	stock := []string{"/usr/bin/autopkgtest-virt-incus", image, "--", "--profile", profile}
	owner := incustest.UniqueName("avsbench")
	ours := []string{filepath.Join(buildServer(t), virtServerName), "--socket=" + d.Socket, "--owner=" + owner, image, "--", "--profile", profile}
	// Our close leaves the stops and deletions to incusd (see
	// virtserver.Incus.Close): how long after autopkgtest's exit the
	// instances were gone, for the table.
	m, err := instance.New(d.Client, instance.Config{Owner: owner})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	goneAfter := func() float64 {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if left := waitGone(ctx, t, m); len(left) != 0 {
			t.Fatalf("left behind by the server: %v", left)
		}
		return time.Since(start).Seconds()
	}

	// Totals from plain runs, alternating; the breakdown from one run each
	// through the shim and the timer, whose own processes (one per testbed
	// command) would otherwise weigh on both totals alike.
	// One run of each first, not counted: the first run of a process was
	// seen 2.6 s slower than the next ones (Incus makes the image's
	// volume on the pool for the first instance of it, the host's caches
	// fill), and it was always the stock server's.
	runBenchAutopkgtest(t, stockEnv, "", stock)
	runBenchAutopkgtest(t, nil, "", ours)
	goneAfter()
	const plainRuns = 3
	var ts, to, bs, bo, gone []float64
	for range plainRuns {
		r := runBenchAutopkgtest(t, stockEnv, "", stock)
		ts, bs = append(ts, r.total.Seconds()), append(bs, r.busy)
		r = runBenchAutopkgtest(t, nil, "", ours)
		to, bo = append(to, r.total.Seconds()), append(bo, r.busy)
		gone = append(gone, goneAfter())
	}
	rs := runBenchAutopkgtest(t, stockEnv, shim, stock)
	ro := runBenchAutopkgtest(t, nil, shim, ours)
	es := executeOverhead(t, stockEnv, stock, 20)
	eo := executeOverhead(t, nil, ours, 20)

	row := func(name string, s, o float64) {
		ratio := "-"
		if s > 0 {
			ratio = fmt.Sprintf("%.2fx", o/s)
		}
		fmt.Printf("| %-40s | %10.2f | %10.2f | %6s |\n", name, s, o, ratio)
	}
	fmt.Printf("\nautopkgtest run of 6 tests (one breaks-testbed) on %s, seconds\n\n", image)
	fmt.Printf("| %-40s | %10s | %10s | %6s |\n", "measure", "stock", "incusexec", "ratio")
	fmt.Printf("|%s|%s|%s|%s|\n", strings.Repeat("-", 42), strings.Repeat("-", 12), strings.Repeat("-", 12), strings.Repeat("-", 8))
	row(fmt.Sprintf("total (wall time, mean of %d plain runs)", plainRuns), mean(ts), mean(to))
	for i := range ts {
		row(fmt.Sprintf("  plain run %d", i+1), ts[i], to[i])
	}
	fmt.Printf("| %-40s | %9.0f%% | %9.0f%% | %6s |\n", "  CPUs busy during them (mean)", 100*mean(bs), 100*mean(bo), "-")
	fmt.Printf("| %-40s | %10s | %10.2f | %6s |\n", "  instances gone after its exit (mean)", "0 (waited)", mean(gone), "-")
	fmt.Printf("| %-40s | %10s | %10s | %6s |\n", "timed run (shim and timer in front):", "", "", "")
	row("  total", rs.total.Seconds(), ro.total.Seconds())
	row("  open", mean(rs.cmds["open"]), mean(ro.cmds["open"]))
	row(fmt.Sprintf("  revert (mean of %d/%d)", len(rs.cmds["revert"]), len(ro.cmds["revert"])), mean(rs.cmds["revert"]), mean(ro.cmds["revert"]))
	row("  close", mean(rs.cmds["close"]), mean(ro.cmds["close"]))
	row(fmt.Sprintf("  copydown (mean of %d/%d)", len(rs.cmds["copydown"]), len(ro.cmds["copydown"])), mean(rs.cmds["copydown"]), mean(ro.cmds["copydown"]))
	row(fmt.Sprintf("  copyup (mean of %d/%d)", len(rs.cmds["copyup"]), len(ro.cmds["copyup"])), mean(rs.cmds["copyup"]), mean(ro.cmds["copyup"]))
	fmt.Printf("| %-40s | %10d | %10d | %6s |\n", "  testbed commands (execute command)", len(rs.cmds["execute"]), len(ro.cmds["execute"]), "count")
	row("    their mean", mean(rs.cmds["execute"]), mean(ro.cmds["execute"]))
	row("    their sum", sum(rs.cmds["execute"]), sum(ro.cmds["execute"]))
	row("  server commands, sum", rs.serverSum(), ro.serverSum())
	row("  autopkgtest and the timers (the rest)", rs.total.Seconds()-rs.serverSum()-sum(rs.cmds["execute"]), ro.total.Seconds()-ro.serverSum()-sum(ro.cmds["execute"]))
	row("execute `true`, median of the first 10", median(es[:10]), median(eo[:10]))
	row("  and of the next 10", median(es[10:]), median(eo[10:]))
	fmt.Println()
}

// envBenchAgainst names the directory of another build of the server for
// TestBenchVirtServerAgainst.
const envBenchAgainst = "INCUSEXEC_BENCH_VIRTSERVER_AGAINST"

// TestBenchVirtServerAgainst compares this tree's server with another
// build of it in alternating plain runs of the bench's autopkgtest suite
// (five of each after one of each not counted, the order swapped every
// round), so that both see the same machine: how a change to the server
// is measured. The other build is a directory as `make install DESTDIR=D
// BINDIR=/bin` fills D/bin, from a worktree of the other revision:
//
//	git worktree add /tmp/old REV && make -C /tmp/old install DESTDIR=/tmp/old-build BINDIR=/bin
//	INCUSEXEC_BENCH_VIRTSERVER_AGAINST=/tmp/old-build/bin go test -count=1 -timeout 30m -v -run TestBenchVirtServerAgainst ./examples/incusexec/
func TestBenchVirtServerAgainst(t *testing.T) {
	other := os.Getenv(envBenchAgainst)
	if other == "" {
		t.Skip("set " + envBenchAgainst + " to the directory of another build to compare with")
	}
	needTool(t, "autopkgtest")
	for _, name := range []string{virtServerName, execHelperName} {
		if _, err := os.Stat(filepath.Join(other, name)); err != nil {
			t.Fatalf("%s: no %s there: %v", envBenchAgainst, name, err)
		}
	}
	d := incustest.Shared(t)
	image := d.DebianBuildImage(t)
	profile := d.DebianProfile(t)
	this := buildServer(t)
	argv := func(dir string) []string {
		return []string{filepath.Join(dir, virtServerName), "--socket=" + d.Socket, "--owner=" + incustest.UniqueName("avsab"), image, "--", "--profile", profile}
	}
	// One run of each first, not counted (see TestBenchVirtServer).
	runBenchAutopkgtest(t, nil, "", argv(other))
	runBenchAutopkgtest(t, nil, "", argv(this))
	const rounds = 5
	var to, tt []float64
	fmt.Printf("\nalternating plain runs of the bench suite on %s, seconds\n\n| round | other (%s) | this tree |\n|---|---|---|\n", image, other)
	for i := range rounds {
		first, second := other, this
		if i%2 == 1 {
			first, second = this, other
		}
		a := runBenchAutopkgtest(t, nil, "", argv(first)).total.Seconds()
		b := runBenchAutopkgtest(t, nil, "", argv(second)).total.Seconds()
		if first == this {
			a, b = b, a
		}
		to, tt = append(to, a), append(tt, b)
		fmt.Printf("| %d | %.2f | %.2f |\n", i+1, a, b)
	}
	fmt.Printf("| mean | %.2f | %.2f |\n| median | %.2f | %.2f |\n\nthis tree / other: %.2fx (means)\n\n", mean(to), mean(tt), median(to), median(tt), mean(tt)/mean(to))
}
