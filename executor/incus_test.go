package executor_test

import (
	"os"
	"testing"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/executor/executortest"
	"github.com/incusexec/incusexec/internal/incustest"
)

func TestMain(m *testing.M) { incustest.Main(m) }

// busyboxBackend returns a backend on the test daemon with an owner of the
// test's own.
func busyboxBackend(t *testing.T) (*incustest.Daemon, *executor.Backend) {
	t.Helper()
	d := incustest.Shared(t)
	d.BusyboxImage(t)
	b, err := executor.NewBackend(t.Context(), executor.Config{
		Client:       d.Client,
		Owner:        incustest.UniqueName("executortest-"),
		AllowedRoots: []string{os.TempDir()},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return d, b
}

func TestConformanceIncus(t *testing.T) {
	_, b := busyboxBackend(t)
	executortest.Run(t, func(t *testing.T) executor.Executor {
		ex, err := b.Executor(executor.Image{Alias: incustest.BusyboxAlias})
		if err != nil {
			t.Fatal(err)
		}
		return ex
	}, executortest.Options{})
}
