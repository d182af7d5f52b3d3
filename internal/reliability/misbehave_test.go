package reliability_test

import (
	"bytes"
	"errors"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/matryer/is"
)

// launchBusybox starts a busybox container of a fresh owner for one test.
func launchBusybox(t *testing.T, spec instance.Spec) (*instance.Manager, *instance.Instance) {
	t.Helper()
	d := incustest.Shared(t)
	d.BusyboxImage(t)
	m, err := instance.New(d.Client, instance.Config{Owner: incustest.UniqueName("rel-"), StopGrace: 5 * time.Second, KillGrace: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	spec.Image = incustest.BusyboxAlias
	in, err := m.Create(ctxFor(t, 2*time.Minute), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = in.Delete(ctxFor(t, time.Minute)) })
	return m, in
}

// counter counts what is written to it and keeps nothing.
type counter struct{ n atomic.Int64 }

func (c *counter) Write(p []byte) (int, error) { c.n.Add(int64(len(p))); return len(p), nil }

// rss reads the process's resident set size in bytes.
func rss(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// TestExecOneGiBOutputInBoundedMemory drains a command printing 1 GiB into
// a writer that counts, and checks that the host's memory did not grow with
// the output: the stream is copied, never buffered whole. (Not parallel, so
// that other tests do not move the figures.)
func TestExecOneGiBOutputInBoundedMemory(t *testing.T) {
	is := is.New(t)
	_, in := launchBusybox(t, instance.Spec{})
	const size = 1 << 30
	const bound = 128 << 20 // generous: a few buffers, not the output
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heap0, rss0 := int64(ms.HeapInuse), rss(t)
	var peakHeap, peakRSS atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if h := int64(ms.HeapInuse); h > peakHeap.Load() {
				peakHeap.Store(h)
			}
			if r := rss(t); r > peakRSS.Load() {
				peakRSS.Store(r)
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	var out, errs counter
	code, err := in.Exec(ctxFor(t, 5*time.Minute), executor.Cmd{Args: []string{"head", "-c", strconv.Itoa(size), "/dev/zero"}, Stdout: &out, Stderr: &errs})
	close(stop)
	wg.Wait()
	is.NoErr(err)
	is.Equal(code, 0)
	is.Equal(out.n.Load(), int64(size)) // every byte drained
	heapGrowth, rssGrowth := peakHeap.Load()-heap0, peakRSS.Load()-rss0
	t.Logf("1 GiB drained: peak heap growth %d MiB, peak RSS growth %d MiB (bound %d MiB)", heapGrowth>>20, rssGrowth>>20, bound>>20)
	if heapGrowth > bound || rssGrowth > bound {
		t.Errorf("memory grew with the output: heap +%d MiB, RSS +%d MiB", heapGrowth>>20, rssGrowth>>20)
	}
}

// TestExecChildrenHoldingOutputOpen runs commands whose children keep the
// output open after the command ends or is killed: Exec must return (at
// the timeout for a command that does not end, or once the command exits),
// not wait for the children forever.
func TestExecChildrenHoldingOutputOpen(t *testing.T) {
	t.Parallel()
	_, in := launchBusybox(t, instance.Spec{})
	type tc struct {
		name     string
		args     []string
		timeout  time.Duration
		timedOut bool
	}
	for _, c := range []tc{
		{"exits, children keep stdout", []string{"sh", "-c", "sleep 600 & sleep 600 & echo started"}, 0, false},
		{"exits, child ignoring TERM keeps stderr", []string{"sh", "-c", "(trap '' TERM; sleep 600) & echo started >&2"}, 0, false},
		{"times out, children keep output", []string{"sh", "-c", "sleep 600 & (trap '' TERM; sleep 600) & echo started; exec sleep 600"}, 2 * time.Second, true},
		{"ignores TERM, times out, children keep output", []string{"sh", "-c", "trap '' TERM; sleep 600 & echo started; while :; do sleep 1; done"}, 2 * time.Second, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			is := is.New(t)
			var out, errs bytes.Buffer
			ctx := ctxFor(t, 2*time.Minute)
			code, err := in.Exec(ctx, executor.Cmd{Args: c.args, Stdout: &out, Stderr: &errs, Timeout: c.timeout})
			t.Logf("code %d, err %v, stdout %q, stderr %q", code, err, out.String(), errs.String())
			is.True(ctx.Err() == nil) // returned on its own, not at the test's deadline
			is.Equal(out.String()+errs.String(), "started\n")
			if c.timedOut {
				is.True(errors.Is(err, instance.ErrTimeout))
			} else {
				is.NoErr(err)
				is.Equal(code, 0)
			}
		})
	}
}
