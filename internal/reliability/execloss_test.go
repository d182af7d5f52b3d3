package reliability_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/incusexec/incusexec/internal/reliability"
	"github.com/matryer/is"
)

// EnvExecLoss runs TestExecOutputUnderLoad with that many commands per side
// (the soak variant runs execLossSoak).
const EnvExecLoss = "INCUSEXEC_EXECLOSS"

const (
	execLossSoak = 2000
	// Each round runs stockConc commands through the stock `incus exec`
	// together, then oursConc through incusexec together, under the same
	// load. Stock's batches run alone because that is how they show the
	// race here: 32 stock commands at a time alone lost 2 of 320 and 1 of
	// 320, while 32 stock beside 48 incusexec commands at the same moment
	// lost 0 of 992 (2026-11-30): incusd's poll timeouts and the commands'
	// writes must crowd into the same instant. Ours are cheap (goroutines
	// of this process), so a round runs three times as many of them.
	stockConc = 32
	oursConc  = 96
	// Load: fork loops on the host, beside incusd in its CPU cgroup (loops
	// inside the container are one scheduling group and barely delay
	// incusd), and output floods streamed through incusd over websockets,
	// which keep incusd's own threads busy. The race needs incusd's reader
	// to be late between its poll timeout and its check that the command
	// has ended.
	floodLoops = 8
)

// hostLoops is the number of fork loops on the host: eight per CPU (with
// four per CPU and four floods, stock lost nothing in 720 commands here; with
// eight per CPU and eight floods it lost 1-2 in 320).
var hostLoops = 8 * runtime.NumCPU()

// execLossCommand is the i-th command: silent for about incusd's poll
// timeout (1 s), then it writes and exits — the window in which incusd's
// output pipe reader gives up. Its poll starts a little after the command
// does, by a delay that the load changes, so the silences sweep 0.90 s to
// 1.02 s in 10 ms steps for some writes to land right after the timeout.
func execLossCommand(i int) []string {
	silence := 900 + 10*(i%13)
	return []string{"sh", "-c", fmt.Sprintf("sleep %d.%03d; echo marker", silence/1000, silence%1000)}
}

func execLossRuns(t *testing.T) int {
	if v := os.Getenv(EnvExecLoss); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("%s=%q: want a positive number of commands", EnvExecLoss, v)
		}
		return n
	}
	if reliability.Soak() {
		return execLossSoak
	}
	t.Skipf("soak only (%s=1 or %s=N): it loads the CPUs for minutes", reliability.EnvSoak, EnvExecLoss)
	return 0
}

// TestExecOutputUnderLoad is the reproducer of incusd's lost exec output:
// rounds of commands that write right at incusd's poll timeout, a batch
// of stockConc through the stock `incus exec`, then a batch of oursConc
// through instance.Exec, while fork loops on the host and output floods
// through incusd oversubscribe the CPUs. It counts
// the commands whose output was not exactly "marker\n". incusexec must lose
// none of its N commands; stock (stockConc per round, a third as many) must
// lose some, or the load did not reproduce the race and the run proves
// nothing.
func TestExecOutputUnderLoad(t *testing.T) {
	runs := execLossRuns(t)
	is := is.New(t)
	d := incustest.Shared(t)
	d.BusyboxImage(t)
	m, err := instance.New(d.Client, instance.Config{Owner: incustest.UniqueName("execloss-")})
	is.NoErr(err)
	defer m.Close()
	ctx := ctxFor(t, 150*time.Minute)
	in, err := m.Create(ctx, instance.Spec{Image: incustest.BusyboxAlias})
	is.NoErr(err)
	defer func() { is.NoErr(in.Delete(context.WithoutCancel(ctx))) }()

	stopLoad := startHostForkLoad(ctx, t, 140*time.Minute)
	stopFloods := startFloods(ctx, t, in)
	stock := &lossCount{}
	ours := &lossCount{}
	start := time.Now()
	for round := 0; ours.n < runs; round++ {
		stockDone := stock.n
		stock.add(runBatch(stockConc, stockDone, func(args []string) (string, error) {
			return stockExec(ctx, d.Dir, in.Name(), args)
		}))
		oursDone := ours.n
		ours.add(runBatch(min(oursConc, runs-oursDone), oursDone, func(args []string) (string, error) {
			return libExec(ctx, in, args)
		}))
		if round%3 == 0 {
			t.Logf("%v: stock lost %d of %d, incusexec lost %d of %d", time.Since(start).Round(time.Second), stock.lost, stock.n, ours.lost, ours.n)
		}
	}
	stopFloods()
	stopLoad()
	for _, e := range stock.samples {
		t.Logf("stock: %s", e)
	}
	t.Logf("SUMMARY rounds of %d at a time through stock incus exec, then %d through incusexec, %d fork loops on the host, %d output floods, %v: stock incus exec lost %d of %d (%d errors), incusexec lost %d of %d (%d errors)",
		stockConc, oursConc, hostLoops, floodLoops, time.Since(start).Round(time.Second), stock.lost, stock.n, stock.errs, ours.lost, ours.n, ours.errs)
	for _, e := range ours.samples {
		t.Errorf("incusexec: %s", e)
	}
	is.Equal(ours.lost+ours.errs, 0) // incusexec lost nothing
	if stock.lost == 0 {
		t.Errorf("stock incus exec lost nothing in %d commands: the load did not reproduce incusd's race, so this run shows nothing", stock.n)
	}
}

// startFloods streams floodLoops endless outputs through incusd until the
// returned function is called.
func startFloods(ctx context.Context, t *testing.T, in *instance.Instance) func() {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range floodLoops {
		wg.Go(func() {
			_, err := in.Exec(ctx, executor.Cmd{Args: []string{"sh", "-c", "while :; do cat /bin/busybox; done"}, Stdout: io.Discard, Stream: true, KillGrace: time.Second})
			if err != nil && ctx.Err() == nil {
				t.Errorf("output flood: %v", err)
			}
		})
	}
	return func() { cancel(); wg.Wait() }
}

// startHostForkLoad runs hostLoops fork-heavy shell loops on the host until
// the returned function is called or limit has passed (the loops end
// themselves then, whatever happens to the test).
func startHostForkLoad(ctx context.Context, t *testing.T, limit time.Duration) func() {
	script := fmt.Sprintf(`end=$(( $(date +%%s) + %d )); while [ "$(date +%%s)" -lt "$end" ]; do /bin/true; /bin/true; /bin/true; done`, int(limit.Seconds()))
	var cmds []*exec.Cmd
	for range hostLoops {
		cmd := exec.CommandContext(ctx, "sh", "-c", script)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		if err := cmd.Start(); err != nil {
			t.Fatalf("host fork loop: %v", err)
		}
		cmds = append(cmds, cmd)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			for _, cmd := range cmds {
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				_ = cmd.Wait()
			}
		})
	}
	t.Cleanup(stop) // also when the test fails before stopping them
	return stop
}

func stockExec(ctx context.Context, incusDir, name string, args []string) (string, error) {
	cmd := exec.CommandContext(ctx, "incus", append([]string{"exec", name, "--"}, args...)...)
	cmd.Env = append(os.Environ(), "INCUS_DIR="+incusDir)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("incus exec: %w: %s", err, errb.String())
	}
	return out.String(), nil
}

func libExec(ctx context.Context, in *instance.Instance, args []string) (string, error) {
	var out bytes.Buffer
	code, err := in.Exec(ctx, executor.Cmd{Args: args, Stdout: &out})
	if err == nil && code != 0 {
		err = fmt.Errorf("status %d", code)
	}
	return out.String(), err
}

type lossCount struct {
	n, lost, errs int
	samples       []string // the first few failures, verbatim
}

type outcome struct {
	cmd string // the shell script: its silence
	out string
	err error
}

func (c *lossCount) add(results []outcome) {
	for _, r := range results {
		c.n++
		switch {
		case r.err != nil:
			c.errs++
		case r.out != "marker\n":
			c.lost++
		default:
			continue
		}
		if len(c.samples) < 10 {
			c.samples = append(c.samples, fmt.Sprintf("%s: output %q, err %v", r.cmd, r.out, r.err))
		}
	}
}

// runBatch runs commands base to base+n-1 (execLossCommand) at once.
func runBatch(n, base int, run func(args []string) (string, error)) []outcome {
	res := make([]outcome, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			args := execLossCommand(base + i)
			res[i].cmd = args[len(args)-1]
			res[i].out, res[i].err = run(args)
		})
	}
	wg.Wait()
	return res
}
