package incustest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// EnvIntegration controls integration tests: "required" turns every reason
// to skip into a failure (CI sets it), "off" skips them all; otherwise they
// run where a daemon can be started and skip with the reason where not.
const EnvIntegration = "INCUSEXEC_INTEGRATION"

// Required reports whether integration tests must run.
func Required() bool { return os.Getenv(EnvIntegration) == "required" }

var shared struct {
	sync.Mutex
	d   *Daemon
	err error
}

// Shared returns the test binary's private daemon, starting it on first use.
// Main stops it once all tests have run. Where no daemon can be started the
// test is skipped, or failed when integration tests are required.
func Shared(t testing.TB) *Daemon {
	t.Helper()
	if os.Getenv(EnvIntegration) == "off" {
		t.Skip("integration tests disabled: " + EnvIntegration + "=off")
	}
	shared.Lock()
	defer shared.Unlock()
	if shared.d == nil && shared.err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		shared.d, shared.err = Start(ctx, Options{})
		cancel()
	}
	if shared.err != nil {
		SkipOrFail(t, shared.err)
	}
	return shared.d
}

// SkipOrFail skips the test because of err, or fails it when integration
// tests are required or err is not about Incus being unavailable.
func SkipOrFail(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, ErrUnavailable) && !Required() {
		t.Skip(err)
	}
	t.Fatalf("integration test cannot run (%s=%q): %v", EnvIntegration, os.Getenv(EnvIntegration), err)
}

// Main runs the tests of a package and then stops the shared daemon; use it
// as TestMain's body. A daemon that cannot be stopped cleanly fails the run.
//
// The daemons are also stopped when the test binary is interrupted (SIGINT,
// SIGTERM) and shortly before go test's -timeout would kill it, so that a hung
// test does not leak them.
func Main(m *testing.M) {
	flag.Parse()
	sharedCluster.Lock()
	sharedCluster.main = true
	sharedCluster.Unlock()
	stopWatch := watchdog()
	code := m.Run()
	stopWatch()
	if err := stopSharedCluster(); err != nil {
		fmt.Fprintln(os.Stderr, "incustest: stopping the shared cluster:", err)
		if code == 0 {
			code = 1
		}
	}
	shared.Lock()
	d := shared.d
	shared.d = nil
	shared.Unlock()
	if d != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		if err := d.Stop(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "incustest: stopping the private daemon:", err)
			if code == 0 {
				code = 1
			}
		}
		cancel()
	}
	os.Exit(code)
}

// Private starts a daemon for one test alone and stops it at the test's end.
func Private(t testing.TB, opts Options) *Daemon {
	t.Helper()
	if os.Getenv(EnvIntegration) == "off" {
		t.Skip("integration tests disabled: " + EnvIntegration + "=off")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	d, err := Start(ctx, opts)
	if err != nil {
		SkipOrFail(t, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			// The daemon's own account goes with its directory; keep
			// what it said went wrong in the test's output.
			t.Logf("incusd's warnings and errors in %s:\n%s", d.Dir, d.logProblems())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if err := d.Stop(ctx); err != nil {
			t.Errorf("stop private daemon: %v", err)
		}
	})
	return d
}

var live struct {
	sync.Mutex
	daemons map[*Daemon]bool
}

func track(d *Daemon) {
	live.Lock()
	defer live.Unlock()
	if live.daemons == nil {
		live.daemons = map[*Daemon]bool{}
	}
	live.daemons[d] = true
}

func untrack(d *Daemon) {
	live.Lock()
	defer live.Unlock()
	delete(live.daemons, d)
}

// stopSharedCluster stops the cluster SharedCluster started, if any.
func stopSharedCluster() error {
	sharedCluster.Lock()
	c := sharedCluster.c
	sharedCluster.c = nil
	sharedCluster.Unlock()
	if c == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	return c.Stop(ctx)
}

// stopping is set once stopAll has begun: a restart in flight then does
// not start incusd again behind its back.
var stopping atomic.Bool

// stopAll stops the shared cluster and every daemon this process started and
// has not stopped.
func stopAll(why string) {
	stopping.Store(true)
	if err := stopSharedCluster(); err != nil {
		fmt.Fprintf(os.Stderr, "incustest: %s: stopping the shared cluster: %v\n", why, err)
	}
	live.Lock()
	var ds []*Daemon
	for d := range live.daemons {
		ds = append(ds, d)
	}
	live.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for _, d := range ds {
		fmt.Fprintf(os.Stderr, "incustest: %s: stopping the daemon in %s\n", why, d.Dir)
		if err := d.Stop(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "incustest:", err)
		}
	}
}

// watchdog stops the daemons on SIGINT/SIGTERM, and 45 s before the test
// binary's -test.timeout, then exits; the returned func disarms it.
func watchdog() (disarm func()) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	var deadline <-chan time.Time
	if f := flag.Lookup("test.timeout"); f != nil {
		if d, ok := f.Value.(flag.Getter).Get().(time.Duration); ok && d > 90*time.Second {
			timer := time.NewTimer(d - 45*time.Second)
			deadline = timer.C
		}
	}
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			stopAll("received " + s.String())
			os.Exit(130)
		case <-deadline:
			stopAll("test timeout is near")
			fmt.Fprintln(os.Stderr, "incustest: FAIL: tests still running 45s before -timeout; daemons stopped")
			os.Exit(1)
		case <-done:
		}
	}()
	return func() { signal.Stop(sigs); close(done) }
}
