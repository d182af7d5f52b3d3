package incustest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
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
func Main(m *testing.M) {
	code := m.Run()
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
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if err := d.Stop(ctx); err != nil {
			t.Errorf("stop private daemon: %v", err)
		}
	})
	return d
}
