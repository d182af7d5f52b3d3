package instance_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/internal/incustest"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain())
	}
	incustest.Main(m)
}

// logBuffer collects a manager's log for tests that check what it did.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// setup returns the shared daemon and a manager with an owner of its own.
func setup(t testing.TB, cfg instance.Config) (*incustest.Daemon, *instance.Manager, *logBuffer) {
	t.Helper()
	d := incustest.Shared(t)
	d.BusyboxImage(t)
	if cfg.Owner == "" {
		cfg.Owner = incustest.UniqueName("owner-")
	}
	logs := &logBuffer{}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	m, err := instance.New(d.Client, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return d, m, logs
}

func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// launch creates a busybox instance and deletes it at the test's end.
func launch(t testing.TB, m *instance.Manager, spec instance.Spec) *instance.Instance {
	t.Helper()
	if spec.Image == "" {
		spec.Image = incustest.BusyboxAlias
	}
	in, err := m.Create(ctxFor(t, 2*time.Minute), spec)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Cleanup(func() {
		if err := in.Delete(context.Background()); err != nil {
			t.Errorf("delete %s: %v", in.Name(), err)
		}
	})
	return in
}

// run runs args as root and returns stdout; it fails the test on an error
// or a non-zero status.
func run(t testing.TB, in *instance.Instance, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	code, err := in.Exec(ctxFor(t, time.Minute), executor.Cmd{Args: args, Stdout: &out, Stderr: &errb})
	if err != nil || code != 0 {
		t.Fatalf("%q: status %d, err %v, stderr %q", args, code, err, errb.String())
	}
	return strings.TrimSpace(out.String())
}

func mustAddr(t testing.TB, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatalf("address %q: %v", s, err)
	}
	return a
}
