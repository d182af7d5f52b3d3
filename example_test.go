package incusexec_test

import (
	"context"
	"fmt"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/executor/fake"
)

// runTask is a task the way a host writes it: against executor.Executor
// only, so that the same code runs on the Incus backend (executor/incus)
// in production and on the in-memory fake in the host's tests.
func runTask(ctx context.Context, ex executor.Executor, args ...string) (string, error) {
	if err := ex.EnsureImage(ctx); err != nil {
		return "", err
	}
	in, err := ex.Create(ctx, executor.Spec{Ephemeral: true})
	if err != nil {
		return "", err
	}
	defer in.Delete(context.WithoutCancel(ctx))
	if err := in.Start(ctx); err != nil {
		return "", err
	}
	res, err := executor.Output(ctx, in, executor.Cmd{Args: args})
	if err != nil {
		return "", err
	}
	if res.ExitCode != 0 {
		return "", fmt.Errorf("task exited with status %d: %s", res.ExitCode, res.Stderr)
	}
	return string(res.Stdout), nil
}

// A host's task, run here on the fake executor; with an executor from
// executor/incus (incus.NewBackend, then Backend.Executor for the image) in
// place of fake.New(), the same runTask runs in an Incus container.
func Example() {
	ctx := context.Background()
	ex := fake.New()
	out, err := runTask(ctx, ex, "echo", "built")
	fmt.Printf("%q %v\n", out, err)
	left, _ := ex.List(ctx)
	fmt.Println("instances left:", len(left))
	// Output:
	// "built\n" <nil>
	// instances left: 0
}
