package instance_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/internal/incustest"
)

// BenchmarkExecPaths times one command through Exec's recorded default,
// its websocket path (Cmd.Stream), `incus exec` and an output directory
// (UseOutputDir), in rotating order on one busybox container, and prints
// medians with ratios side by side; then `true` back to back through the
// recorded path and the output directory. Run it once:
//
//	go test -run '^$' -bench ExecPaths -benchtime 1x ./instance/
func BenchmarkExecPaths(b *testing.B) {
	d := incustest.Shared(b)
	d.BusyboxImage(b)
	m, err := instance.New(d.Client, instance.Config{Owner: incustest.UniqueName("bench-")})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	outDir, err := instance.NewOutputDir(b.TempDir(), "/var/lib/incusexec/output")
	if err != nil {
		b.Fatal(err)
	}
	in, err := m.Create(ctx, instance.Spec{Image: incustest.BusyboxAlias,
		Devices: map[string]map[string]string{"output": outDir.Device()}})
	if err != nil {
		b.Fatal(err)
	}
	defer in.Delete(ctx)
	// The same container through an output directory: another handle.
	shared := m.Instance(in.Name())
	if err := shared.UseOutputDir(ctx, outDir); err != nil {
		b.Fatal(err)
	}
	fmt.Println(benchHeader)
	for _, c := range []struct {
		name string
		runs int
		args []string
	}{
		{"true", 41, []string{"true"}},
		{"echo 64 KiB", 41, []string{"head", "-c", "65536", "/dev/zero"}},
		{"sleep 2; echo", 5, []string{"sh", "-c", "sleep 2; echo done"}},
	} {
		lib := func(in *instance.Instance, stream bool) func() error {
			return func() error {
				var out bytes.Buffer
				code, err := in.Exec(ctx, executor.Cmd{Args: c.args, Stream: stream, Stdout: &out})
				if err == nil && code != 0 {
					err = fmt.Errorf("exit %d", code)
				}
				return err
			}
		}
		cli := func() error {
			cmd := exec.Command("incus", append([]string{"exec", in.Name(), "--"}, c.args...)...)
			cmd.Env = append(os.Environ(), "INCUS_DIR="+d.Dir)
			return cmd.Run()
		}
		sides := []func() error{lib(in, false), lib(in, true), cli, lib(shared, false)}
		times := make([][]time.Duration, len(sides))
		for i := range c.runs {
			for j := range sides {
				k := (i + j) % len(sides)
				t0 := time.Now()
				if err := sides[k](); err != nil {
					b.Fatalf("%s: %v", c.name, err)
				}
				times[k] = append(times[k], time.Since(t0))
			}
		}
		rec, ws, ref, dir := med(times[0]), med(times[1]), med(times[2]), med(times[3])
		fmt.Printf("| %s (×%d) | %v | %v | %v | %v | %.2fx | %.2fx | %.2fx | %.2fx |\n", c.name, c.runs,
			rec.Round(100*time.Microsecond), ws.Round(100*time.Microsecond), ref.Round(100*time.Microsecond), dir.Round(100*time.Microsecond),
			float64(rec)/float64(ref), float64(ws)/float64(ref), float64(rec)/float64(ws), float64(dir)/float64(rec))
	}
	benchBackToBack(b, ctx, in, shared)
}

// benchBackToBack times `true` run back to back, as a test suite's
// commands come: in alternating blocks of 25 through the recorded path
// and through the output directory (each request of a command's output
// also delays the next command).
func benchBackToBack(b *testing.B, ctx context.Context, recorded, shared *instance.Instance) {
	sides := []*instance.Instance{recorded, shared}
	times := make([][]time.Duration, len(sides))
	for block := range 4 {
		k := block % len(sides)
		for range 25 {
			t0 := time.Now()
			code, err := sides[k].Exec(ctx, executor.Cmd{Args: []string{"true"}})
			if err == nil && code != 0 {
				err = fmt.Errorf("exit %d", code)
			}
			if err != nil {
				b.Fatalf("back to back: %v", err)
			}
			times[k] = append(times[k], time.Since(t0))
		}
	}
	rec, dir := med(times[0]), med(times[1])
	fmt.Printf("\n| back to back (×50, blocks of 25) | recorded p50 | output directory p50 | directory/recorded |\n|---|---|---|---|\n")
	fmt.Printf("| true | %v | %v | %.2fx |\n", rec.Round(100*time.Microsecond), dir.Round(100*time.Microsecond), float64(dir)/float64(rec))
}

func med(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

const benchHeader = "| command | recorded (default) p50 | websocket (Stream) p50 | incus exec p50 | output directory p50 | recorded/incus | websocket/incus | recorded/websocket | directory/recorded |\n|---|---|---|---|---|---|---|---|---|"
