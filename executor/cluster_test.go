package executor_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/executor/executortest"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/internal/incustest"
)

// clusterBusyboxReady waits until commands run in the busybox image.
var clusterBusyboxReady = instance.Ready{Timeout: time.Minute,
	Probe: func(ctx context.Context, in *instance.Instance) (bool, string, error) {
		code, err := in.Exec(ctx, instance.Cmd{Args: []string{"true"}})
		return err == nil && code == 0, fmt.Sprintf("true exited %d (%v)", code, err), nil
	}}

// TestConformanceCluster runs the conformance suite against the Incus
// backend on the three-member cluster, connected over HTTPS with a trusted
// client certificate as a remote host would be, with instances placed by
// the cluster's scheduler (no target).
func TestConformanceCluster(t *testing.T) {
	c := incustest.SharedCluster(t)
	c.BusyboxImage(t)
	b, err := executor.NewBackend(t.Context(), executor.Config{
		Client:       c.Client,
		Owner:        incustest.UniqueName("executortest-"),
		AllowedRoots: []string{os.TempDir()},
		Ready:        clusterBusyboxReady,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	executortest.Run(t, func(t *testing.T) executor.Executor {
		ex, err := b.Executor(executor.Image{Alias: incustest.BusyboxAlias})
		if err != nil {
			t.Fatal(err)
		}
		return ex
	}, executortest.Options{})
}
