package reliability_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/incusexec/incusexec/internal/reliability"
	incus "github.com/lxc/incus/v6/client"
	"github.com/matryer/is"
)

// runChildRun is `incusexec run --ready none -- sleep 2`: an ephemeral
// instance, one command, deletion. Its instances are named with job.Prefix.
func runChildRun(job childJob) error {
	ctx := context.Background()
	c, err := incus.ConnectIncusUnix(job.Socket, nil)
	if err != nil {
		return err
	}
	im, err := instance.New(c, instance.Config{Owner: job.Owner, Prefix: job.Prefix})
	if err != nil {
		return err
	}
	fmt.Println("launch")
	in, err := im.Create(ctx, instance.Spec{Image: incustest.BusyboxAlias, Ephemeral: true})
	if err != nil {
		return err
	}
	fmt.Println("exec")
	if _, err := in.Exec(ctx, executor.Cmd{Args: []string{"sleep", "2"}}); err != nil {
		return err
	}
	fmt.Println("delete")
	return in.Delete(ctx)
}

// TestGCRightAfterKilledRun kills a host in the first second of a run (an
// ephemeral launch, a command, a delete), runs GC once for its owner and
// lists the server's instances the moment GC returns: none of the dead
// host's may be there. A creation the server was still carrying out for
// the dead client, or an ephemeral instance still deleting itself, must not
// outlive GC.
func TestGCRightAfterKilledRun(t *testing.T) {
	t.Parallel()
	d := incustest.Shared(t)
	d.BusyboxImage(t)
	rounds := reliability.Rounds(10)
	leftRounds := 0
	for i := range rounds {
		left, delay, killedIn := killRunOnce(t, d)
		if len(left) > 0 {
			leftRounds++
			t.Errorf("round %d (killed %v in, during %s): right after GC the server still lists %s", i+1, delay, killedIn, strings.Join(left, ", "))
		}
	}
	t.Logf("SUMMARY rounds=%d rounds-with-instances-left-after-one-GC=%d", rounds, leftRounds)
}

func killRunOnce(t *testing.T, d *incustest.Daemon) (left []string, delay time.Duration, killedIn string) {
	t.Helper()
	is := is.New(t)
	owner := incustest.UniqueName("g")
	prefix := owner + "-"
	b, err := json.Marshal(childJob{Socket: d.Socket, Owner: owner, Prefix: prefix, Mode: "run"})
	is.NoErr(err)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(b))
	out, err := cmd.StdoutPipe()
	is.NoErr(err)
	cmd.Stderr = os.Stderr
	is.NoErr(cmd.Start())
	phases := make(chan string, 8)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			phases <- sc.Text()
		}
		close(phases)
	}()
	killedIn = <-phases // "launch"
	// Anywhere in the first second; every other round within the first
	// 30 ms, where the creation request has reached the server but its
	// instance does not exist yet (the narrow window GC used to miss).
	window := time.Second
	if rand.IntN(2) == 0 {
		window = 30 * time.Millisecond
	}
	delay = time.Duration(rand.Int64N(int64(window)))
	deadline := time.After(delay)
wait:
	for {
		select {
		case p, ok := <-phases:
			if ok {
				killedIn = p
			}
			if !ok {
				break wait
			}
		case <-deadline:
			break wait
		}
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()

	ctx := ctxFor(t, 3*time.Minute)
	im, err := instance.New(d.Client, instance.Config{Owner: owner, Prefix: prefix, Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))})
	is.NoErr(err)
	defer im.Close()
	start := time.Now()
	deleted, err := im.GC(ctx, instance.GCOptions{})
	if err != nil {
		t.Errorf("GC of %s: %v", owner, err)
	}
	t.Logf("killed %v into the run, during %s; GC deleted %v in %v", delay, killedIn, deleted, time.Since(start).Round(time.Millisecond))
	// Unfiltered: an instance that is being created or deleted may be
	// listed without its configuration, so only its name tells.
	left = named(t, d, prefix)
	if len(left) > 0 {
		// Leave nothing for the next round or the harness: wait until the
		// server is done, then collect again.
		for range 150 {
			time.Sleep(200 * time.Millisecond)
			_, _ = im.GC(ctx, instance.GCOptions{})
			if len(named(t, d, prefix)) == 0 {
				break
			}
		}
	}
	return left, delay, killedIn
}

// named lists the server's instances whose names start with prefix, with
// their status and owner label.
func named(t *testing.T, d *incustest.Daemon, prefix string) []string {
	t.Helper()
	insts, err := d.Client.GetInstances("")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, in := range insts {
		if strings.HasPrefix(in.Name, prefix) {
			out = append(out, fmt.Sprintf("%s (status %s, owner label %q)", in.Name, in.Status, in.Config[executor.OwnerKey]))
		}
	}
	return out
}
