package instance_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-multierror"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/internal/incustest"
	incus "github.com/lxc/incus/v6/client"
	"github.com/matryer/is"
)

// childEnv makes the test binary a host that launches one instance and
// never finishes: its value is "socket owner".
const childEnv = "INSTANCE_TEST_CHILD"

// childMain connects to the parent's daemon and launches an instance whose
// readiness never comes, announcing each name it tries on stdout; the parent
// kills it in the middle of the launch.
func childMain() int {
	socket, owner, _ := strings.Cut(os.Getenv(childEnv), " ")
	c, err := incus.ConnectIncusUnix(socket, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	m, err := instance.New(c, instance.Config{Owner: owner})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	_, err = m.Create(context.Background(), instance.Spec{
		Image: incustest.BusyboxAlias,
		Ready: instance.Ready{Probe: func(context.Context, *instance.Instance) (bool, string, error) {
			fmt.Println("launching")
			return false, "never", nil
		}},
	})
	fmt.Fprintln(os.Stderr, "create returned:", err)
	return 1
}

func TestGCFindsInstancesOfKilledLaunch(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	d, m, _ := setup(t, instance.Config{})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+d.Socket+" "+m.Owner())
	out, err := cmd.StdoutPipe()
	is.NoErr(err)
	cmd.Stderr = os.Stderr
	is.NoErr(cmd.Start())
	line, err := bufio.NewReader(out).ReadString('\n')
	is.NoErr(err)
	is.Equal(line, "launching\n") // in the middle of Create
	is.NoErr(cmd.Process.Kill())
	err = cmd.Wait()
	var exit *exec.ExitError
	is.True(errors.As(err, &exit)) // killed, not finished

	ctx := ctxFor(t, 2*time.Minute)
	left, err := m.List(ctx)
	is.NoErr(err)
	is.Equal(len(left), 1) // the launch left its instance behind ...
	deleted, err := m.GC(ctx, instance.GCOptions{})
	is.NoErr(err)
	is.Equal(deleted, left) // ... and GC found it
	left, err = m.List(ctx)
	is.NoErr(err)
	is.Equal(len(left), 0)
}

func TestGCSelectsByOwnerAgeAndKeep(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	_, m, _ := setup(t, instance.Config{})
	_, other, _ := setup(t, instance.Config{})
	ctx := ctxFor(t, 2*time.Minute)
	a := launch(t, m, instance.Spec{})
	b := launch(t, m, instance.Spec{NoStart: true})
	c := launch(t, m, instance.Spec{NoStart: true})
	foreign := launch(t, other, instance.Spec{NoStart: true})

	deleted, err := m.GC(ctx, instance.GCOptions{OlderThan: time.Hour})
	is.NoErr(err)
	is.Equal(len(deleted), 0) // all too young

	deleted, err = m.GC(ctx, instance.GCOptions{Keep: func(name string) bool { return name == c.Name() }, Concurrency: 2})
	is.NoErr(err)
	want := []string{a.Name(), b.Name()}
	slices.Sort(want)
	is.Equal(deleted, want)
	left, err := m.List(ctx)
	is.NoErr(err)
	is.Equal(left, []string{c.Name()})
	_, err = other.Get(ctx, foreign.Name()) // another owner's is untouched
	is.NoErr(err)
}

// failingDeletes is the real client with deletions of some instances
// refused: a failure the daemon does not produce on demand.
type failingDeletes struct {
	instance.Client
	refuse map[string]bool
}

func (f failingDeletes) DeleteInstance(name string) (incus.Operation, error) {
	if f.refuse[name] {
		return nil, fmt.Errorf("refused to delete %s", name)
	}
	return f.Client.DeleteInstance(name)
}

func TestGCReportsEveryFailureAndKeepsGoing(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	d, m, _ := setup(t, instance.Config{})
	var names []string
	for range 3 {
		names = append(names, launch(t, m, instance.Spec{NoStart: true}).Name())
	}
	slices.Sort(names)
	refusing, err := instance.New(failingDeletes{d.Client, map[string]bool{names[0]: true, names[2]: true}}, instance.Config{Owner: m.Owner()})
	is.NoErr(err)
	deleted, err := refusing.GC(ctxFor(t, time.Minute), instance.GCOptions{Concurrency: 1})
	is.Equal(deleted, names[1:2])
	var merr *multierror.Error
	is.True(errors.As(err, &merr))
	is.Equal(len(merr.Errors), 2)
	is.True(strings.Contains(err.Error(), "refused to delete "+names[0]))
	is.True(strings.Contains(err.Error(), "refused to delete "+names[2]))
}
