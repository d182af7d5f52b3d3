package bench_test

import (
	"bytes"
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	incus "github.com/lxc/incus/v6/client"
	"github.com/matryer/is"

	"github.com/incusexec/incusexec/imagebuild/imagetest"
	"github.com/incusexec/incusexec/internal/bench"
	"github.com/incusexec/incusexec/internal/incustest"
)

func TestMain(m *testing.M) { incustest.Main(m) }

// inventory names what a daemon holds besides instances.
func inventory(t *testing.T, c incus.InstanceServer) []string {
	t.Helper()
	var out []string
	pools, err := c.GetStoragePoolNames()
	if err != nil {
		t.Fatal(err)
	}
	all, err := c.GetNetworks()
	if err != nil {
		t.Fatal(err)
	}
	var nets []string
	for _, n := range all {
		if n.Managed {
			nets = append(nets, n.Name)
		}
	}
	profiles, err := c.GetProfileNames()
	if err != nil {
		t.Fatal(err)
	}
	images, err := c.GetImageFingerprints()
	if err != nil {
		t.Fatal(err)
	}
	insts, err := c.GetInstanceNames("")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range [][]string{pools, nets, profiles, images, insts} {
		out = append(out, l...)
	}
	slices.Sort(out)
	return out
}

// TestQuickRunIsCompleteAndLeavesNothing runs the whole suite once, quickly,
// on a pool it creates with the driver of the test daemon's own (btrfs
// where possible, else dir: every row is the same code on either). It
// checks that every row was measured, not how fast anything is.
func TestQuickRunIsCompleteAndLeavesNothing(t *testing.T) {
	is := is.New(t)
	d := incustest.Shared(t)
	tarball := incustest.DebianTarball(t, imagetest.HostSuite())
	before := inventory(t, d.Client)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	_, err := bench.Run(ctx, bench.Config{Client: d.Client, Tarball: tarball, Drivers: []string{"zfs"}})
	is.True(err != nil && strings.Contains(err.Error(), `"zfs"`)) // refused, naming it
	var progress bytes.Buffer
	tab, err := bench.Run(ctx, bench.Config{Client: d.Client, CLIEnv: []string{"INCUS_DIR=" + d.Dir},
		Tarball: tarball, Quick: true, Drivers: []string{d.PoolDriver}, Concurrency: 3, Progress: &progress, TmpDir: t.TempDir()})
	t.Log(progress.String())
	is.NoErr(err)
	var out bytes.Buffer
	is.NoErr(tab.Print(&out))
	t.Log("\n" + out.String())

	drivers := map[string]bool{}
	var whats []string
	for _, r := range tab.Rows {
		if r.Ours.Median <= 0 || r.Ref.Median <= 0 || r.Ratio <= 0 {
			t.Errorf("row %q on %q not measured: %+v", r.What, r.Pool, r)
		}
		if r.Pool != "" {
			drivers[r.Pool] = true
		}
		whats = append(whats, r.What)
	}
	is.Equal(drivers, map[string]bool{d.PoolDriver: true}) // ran on a pool of that driver only
	for _, want := range []string{"image import, split", "image import, unified+zstd", "start to ready", "exec round trip p50",
		"exec round trip p99", "exec true p50, recorded (default)", "exec true p50, websocket (Cmd.Stream)",
		"exec true p50, recorded vs websocket", "push", "pull", "teardown", "tasks", "warm pool"} {
		found := slices.ContainsFunc(whats, func(w string) bool { return strings.Contains(w, want) })
		if !found {
			t.Errorf("no row for %q in %q", want, whats)
		}
	}
	// 2 imports, 5 exec rows; per pool: 2 start-to-ready rows, push, pull,
	// teardown, throughput, warm.
	is.Equal(len(tab.Rows), 7+7*len(drivers))
	is.Equal(inventory(t, d.Client), before) // nothing left behind
}

// TestExecTable prints the exec rows of the table, measured for real (not
// quick) on a private daemon: INCUSEXEC_BENCH_EXEC=1 go test -v -run
// TestExecTable ./internal/bench/. It measures; it asserts nothing about
// speed.
func TestExecTable(t *testing.T) {
	if os.Getenv("INCUSEXEC_BENCH_EXEC") == "" {
		t.Skip("a measurement: INCUSEXEC_BENCH_EXEC=1")
	}
	is := is.New(t)
	d := incustest.Shared(t)
	tarball := incustest.DebianTarball(t, imagetest.HostSuite())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	tab, err := bench.Run(ctx, bench.Config{Client: d.Client, CLIEnv: []string{"INCUS_DIR=" + d.Dir},
		Tarball: tarball, Only: []string{"exec"}, Pools: nil, Progress: os.Stderr, TmpDir: t.TempDir()})
	is.NoErr(err)
	var out bytes.Buffer
	is.NoErr(tab.Print(&out))
	t.Log("\n" + out.String())
}
