package clustertest_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/incusexec/incusexec/executor/incus"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/executor/executortest"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/internal/incustest"
)

// clusterBusyboxReady waits until commands run in the busybox image.
var clusterBusyboxReady = instance.Ready{Timeout: time.Minute,
	Probe: func(ctx context.Context, in *instance.Instance) (bool, string, error) {
		code, err := in.Exec(ctx, executor.Cmd{Args: []string{"true"}})
		return err == nil && code == 0, fmt.Sprintf("true exited %d (%v)", code, err), nil
	}}

// TestConformanceCluster runs the conformance suite against the Incus
// backend on the three-member cluster, connected as a remote host would be:
// Config.Remote is the HTTPS address of a member that did not bootstrap the
// cluster, with the client certificate the cluster trusts and the cluster's
// certificate pinned, all from PEM files. The cluster's scheduler places the
// instances (no target).
func TestConformanceCluster(t *testing.T) {
	c := incustest.SharedCluster(t)
	c.BusyboxImage(t)
	dir := t.TempDir()
	files := map[string]string{"client.crt": c.ClientCert, "client.key": c.ClientKey, "server.crt": c.ServerCert}
	for name, pem := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(pem), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b, err := incus.NewBackend(t.Context(), incus.Config{
		Remote:       "https://" + c.Members[1].HostAddress,
		ClientCert:   filepath.Join(dir, "client.crt"),
		ClientKey:    filepath.Join(dir, "client.key"),
		ServerCert:   filepath.Join(dir, "server.crt"),
		Owner:        incustest.UniqueName("executortest-"),
		AllowedRoots: []string{os.TempDir()},
		Ready:        clusterBusyboxReady,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	executortest.Run(t, func(t *testing.T) executor.Executor {
		ex, err := b.Executor(incus.Image{Alias: incustest.BusyboxAlias})
		if err != nil {
			t.Fatal(err)
		}
		return ex
	}, executortest.Options{})
}
