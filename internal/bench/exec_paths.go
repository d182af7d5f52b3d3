package bench

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/instance"
)

// execPaths measures instance.Exec's two paths against each other and
// against `incus exec`, in rotating order: the recorded default (output in
// files, followed by Range requests) and the websocket path (Cmd.Stream).
// args runs n times on each side.
func (r *runner) execPaths(ctx context.Context, in *instance.Instance, what string, n int, args ...string) error {
	ours := func(stream bool) func() (time.Duration, error) {
		return func() (time.Duration, error) {
			return timed(func() error {
				code, err := in.Exec(ctx, executor.Cmd{Args: args, Stream: stream})
				if err == nil && code != 0 {
					err = fmt.Errorf("%q exited %d", args, code)
				}
				return err
			})
		}
	}
	cli := func() (time.Duration, error) {
		return timed(func() error {
			_, err := r.cli(ctx, append([]string{"exec", in.Name(), "--"}, args...)...)
			return err
		})
	}
	sides := []func() (time.Duration, error){ours(false), ours(true), cli}
	samples := make([][]time.Duration, len(sides))
	r.progress("%s ×%d: recorded, websocket, incus exec", what, n)
	for i := range n {
		for j := range sides {
			k := (i + j) % len(sides)
			d, err := sides[k]()
			if err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			samples[k] = append(samples[k], d)
		}
	}
	rec, ws, ref := sampleOf(samples[0]), sampleOf(samples[1]), sampleOf(samples[2])
	cliName := "incus exec NAME -- " + strings.Join(args, " ")
	r.t.add(what+" p50, recorded (default)", "", rec, cliName, ref, 0)
	r.t.add(what+" p50, websocket (Cmd.Stream)", "", ws, cliName, ref, 0)
	r.t.add(what+" p50, recorded vs websocket", "", rec, "instance.Exec with Cmd.Stream", ws, 0)
	return nil
}
