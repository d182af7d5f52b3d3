package instance_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/lxc/incus/v6/shared/api"
)

// BenchmarkVsCLI does the same work through this package and through the
// incus command line (as a CLI-driven host does), side by side on the same
// daemon, image and pool, and prints a table of medians. Run it once:
//
//	go test -run '^$' -bench VsCLI -benchtime 1x ./instance/
func BenchmarkVsCLI(b *testing.B) {
	d := incustest.Shared(b)
	d.BusyboxImage(b)
	m, err := instance.New(d.Client, instance.Config{Owner: incustest.UniqueName("bench-")})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	cli := func(args ...string) (string, error) {
		cmd := exec.Command("incus", args...)
		cmd.Env = append(os.Environ(), "INCUS_DIR="+d.Dir)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		if err != nil {
			err = fmt.Errorf("incus %s: %w: %s", strings.Join(args, " "), err, errb.String())
		}
		return out.String(), err
	}
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	type row struct {
		what      string
		ours, ref time.Duration
		refName   string
	}
	var rows []row
	median := func(n int, f func() time.Duration) time.Duration {
		var ds []time.Duration
		for range n {
			ds = append(ds, f())
		}
		slices.Sort(ds)
		return ds[len(ds)/2]
	}
	b.ResetTimer()

	// Start to ready on the Debian systemd image.
	image, profile := d.DebianImage(b), d.DebianProfile(b)
	// Interleaved, with a pause after each teardown, so that neither side
	// pays for the other's background clean-up.
	var oursD, refD []time.Duration
	for range 3 {
		t0 := time.Now()
		in, err := m.Create(ctx, instance.Spec{Image: image, Profiles: []string{profile}, Ephemeral: true,
			Ready: instance.Ready{Systemd: true, Timeout: 2 * time.Minute}})
		must(err)
		oursD = append(oursD, time.Since(t0))
		must(in.Delete(ctx))
		time.Sleep(2 * time.Second)

		name := incustest.UniqueName("cli-")
		t0 = time.Now()
		_, err = cli("launch", image, name, "--ephemeral", "--profile", profile)
		must(err)
		for {
			out, _ := cli("exec", name, "--", "systemctl", "is-system-running")
			if s := strings.TrimSpace(out); s == "running" || s == "degraded" || s == "maintenance" {
				break
			}
			if time.Since(t0) > 2*time.Minute {
				b.Fatal("CLI launch: not ready after 2 minutes")
			}
		}
		refD = append(refD, time.Since(t0))
		_, err = cli("delete", "--force", name)
		must(err)
		time.Sleep(2 * time.Second)
	}
	slices.Sort(oursD)
	slices.Sort(refD)
	ours, ref := oursD[1], refD[1]
	rows = append(rows, row{"start to ready (systemd)", ours, ref, "incus launch + exec is-system-running loop"})

	// Exec round trip, file transfer and teardown on busybox.
	in, err := m.Create(ctx, instance.Spec{Image: incustest.BusyboxAlias})
	must(err)
	defer in.Delete(ctx)
	ours = median(51, func() time.Duration {
		t0 := time.Now()
		code, err := in.Exec(ctx, executor.Cmd{Args: []string{"true"}})
		must(err)
		if code != 0 {
			b.Fatalf("true exited %d", code)
		}
		return time.Since(t0)
	})
	ref = median(21, func() time.Duration {
		t0 := time.Now()
		_, err := cli("exec", in.Name(), "--", "true")
		must(err)
		return time.Since(t0)
	})
	rows = append(rows, row{"exec round trip p50", ours, ref, "incus exec … true"})

	dir := b.TempDir()
	src := filepath.Join(dir, "src")
	f, err := os.Create(src)
	must(err)
	_, err = io.CopyN(f, rand.Reader, 64<<20)
	must(err)
	must(f.Close())
	ours = median(3, func() time.Duration {
		f, err := os.Open(src)
		must(err)
		defer f.Close()
		t0 := time.Now()
		must(in.Push(ctx, "/root/blob", f, executor.FileOptions{}))
		return time.Since(t0)
	})
	ref = median(3, func() time.Duration {
		t0 := time.Now()
		_, err := cli("file", "push", src, in.Name()+"/root/blob-cli")
		must(err)
		return time.Since(t0)
	})
	rows = append(rows, row{"push 64 MiB", ours, ref, "incus file push"})
	ours = median(3, func() time.Duration {
		f, err := os.Create(filepath.Join(dir, "pulled"))
		must(err)
		defer f.Close()
		t0 := time.Now()
		_, err = in.Pull(ctx, "/root/blob", f)
		must(err)
		return time.Since(t0)
	})
	ref = median(3, func() time.Duration {
		t0 := time.Now()
		_, err := cli("file", "pull", in.Name()+"/root/blob-cli", filepath.Join(dir, "pulled-cli"))
		must(err)
		return time.Since(t0)
	})
	rows = append(rows, row{"pull 64 MiB", ours, ref, "incus file pull"})

	ours = median(3, func() time.Duration {
		e, err := m.Create(ctx, instance.Spec{Image: incustest.BusyboxAlias, Ephemeral: true})
		must(err)
		t0 := time.Now()
		must(e.Delete(ctx))
		return time.Since(t0)
	})
	ref = median(3, func() time.Duration {
		e, err := m.Create(ctx, instance.Spec{Image: incustest.BusyboxAlias, Ephemeral: true})
		must(err)
		t0 := time.Now()
		op, err := d.Client.UpdateInstanceState(e.Name(), api.InstanceStatePut{Action: "stop", Force: true, Timeout: -1}, "")
		must(err)
		must(op.Wait())
		dur := time.Since(t0)
		must(e.Delete(ctx))
		return dur
	})
	rows = append(rows, row{"teardown of ephemeral", ours, ref, "raw API force-stop"})
	b.StopTimer()

	fmt.Printf("\n%-26s %12s %12s %7s  %s\n", "operation", "instance", "reference", "ratio", "reference is")
	for _, r := range rows {
		fmt.Printf("%-26s %12s %12s %6.2fx  %s\n", r.what, r.ours.Round(100*time.Microsecond), r.ref.Round(100*time.Microsecond), float64(r.ours)/float64(r.ref), r.refName)
		b.ReportMetric(float64(r.ours)/float64(r.ref), strings.ReplaceAll(r.what, " ", "_")+"_ratio")
	}
}
