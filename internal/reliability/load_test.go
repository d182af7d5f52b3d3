package reliability_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/matryer/is"
)

// loadRuns is the number of concurrent task runs of TestLoad (the issue's
// figure: 50 on a 2-core machine).
const loadRuns = 50

// TestLoad runs loadRuns task runs at once, each as a Debusine-style worker
// does one: launch a busybox container, run a command, push and pull a small
// file, delete. Every run must succeed, and nothing of the owner may be left.
func TestLoad(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	d := incustest.Shared(t)
	d.BusyboxImage(t)
	m, err := instance.New(d.Client, instance.Config{Owner: incustest.UniqueName("load-"), StopGrace: 5 * time.Second})
	is.NoErr(err)
	defer m.Close()
	ctx := ctxFor(t, 10*time.Minute)
	start := time.Now()
	errs := make([]error, loadRuns)
	var wg sync.WaitGroup
	for i := range loadRuns {
		wg.Go(func() { errs[i] = taskRun(ctx, m, i) })
	}
	wg.Wait()
	failed := 0
	for i, err := range errs {
		if err != nil {
			failed++
			t.Errorf("run %d: %v", i, err)
		}
	}
	left, err := m.List(ctx)
	is.NoErr(err)
	t.Logf("SUMMARY runs=%d failed=%d left=%d in %v", loadRuns, failed, len(left), time.Since(start).Round(time.Second))
	is.Equal(len(left), 0) // no leak
}

func taskRun(ctx context.Context, m *instance.Manager, i int) (err error) {
	in, err := m.Create(ctx, instance.Spec{Image: incustest.BusyboxAlias, ID: fmt.Sprintf("task-%d", i)})
	if err != nil {
		return fmt.Errorf("launch: %w", err)
	}
	defer func() {
		if derr := in.Delete(context.WithoutCancel(ctx)); derr != nil && err == nil {
			err = fmt.Errorf("delete: %w", derr)
		}
	}()
	var out bytes.Buffer
	code, err := in.Exec(ctx, executor.Cmd{Args: []string{"sh", "-c", "echo task $ID"}, Env: map[string]string{"ID": fmt.Sprint(i)}, Stdout: &out})
	if err != nil || code != 0 || out.String() != fmt.Sprintf("task %d\n", i) {
		return fmt.Errorf("exec: code %d, %q, %v", code, out.String(), err)
	}
	data := bytes.Repeat([]byte{byte(i)}, 64<<10)
	if err := in.Push(ctx, "/tmp/in", bytes.NewReader(data), executor.FileOptions{}); err != nil {
		return fmt.Errorf("push: %w", err)
	}
	out.Reset()
	if _, err := in.Pull(ctx, "/tmp/in", &out); err != nil {
		return fmt.Errorf("pull: %w", err)
	}
	if !bytes.Equal(out.Bytes(), data) {
		return fmt.Errorf("pull: got %d bytes back, not the %d pushed", out.Len(), len(data))
	}
	return nil
}
