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
// its websocket path (Cmd.Stream) and `incus exec`, in rotating order on one
// busybox container, and prints medians with ratios side by side. Run it
// once:
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
	in, err := m.Create(ctx, instance.Spec{Image: incustest.BusyboxAlias})
	if err != nil {
		b.Fatal(err)
	}
	defer in.Delete(ctx)
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
		lib := func(stream bool) func() error {
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
		sides := []func() error{lib(false), lib(true), cli}
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
		rec, ws, ref := med(times[0]), med(times[1]), med(times[2])
		fmt.Printf("| %s (×%d) | %v | %v | %v | %.2fx | %.2fx | %.2fx |\n", c.name, c.runs,
			rec.Round(100*time.Microsecond), ws.Round(100*time.Microsecond), ref.Round(100*time.Microsecond),
			float64(rec)/float64(ref), float64(ws)/float64(ref), float64(rec)/float64(ws))
	}
}

func med(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

const benchHeader = "| command | recorded (default) p50 | websocket (Stream) p50 | incus exec p50 | recorded/incus | websocket/incus | recorded/websocket |\n|---|---|---|---|---|---|---|"
