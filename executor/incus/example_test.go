package incus_test

import (
	"context"
	"fmt"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/executor/incus"
)

// Example assembles the Incus backend from one Config and runs a
// Debusine-style task: import the system tarball as artifact/<ID>, create
// an ephemeral instance on the debusine profile, push the inputs, build as
// the unprivileged user, pull the result.
func Example() {
	ctx := context.Background()
	b, err := incus.NewBackend(ctx, incus.Config{
		Owner:        "worker-1",
		Prefix:       "debusine-",
		Network:      &netbridgeSpec,
		Profile:      &profileSpec,
		AllowedRoots: []string{"/srv/debusine/shared"},
	})
	if err != nil {
		fmt.Println(err) // wraps executor.ErrUnavailable without a daemon
		return
	}
	defer b.Close()
	ex, err := b.Executor(incus.Image{ID: "1234", Tarball: "/var/cache/debusine/system.tar.xz"})
	if err != nil {
		panic(err)
	}
	if err := ex.EnsureImage(ctx); err != nil {
		panic(err)
	}
	inst, err := ex.Create(ctx, executor.Spec{ID: "work-request-42", Ephemeral: true})
	if err != nil {
		panic(err)
	}
	defer inst.Delete(ctx)
	if err := inst.Start(ctx); err != nil {
		panic(err)
	}
	user, _ := inst.EnsureUser(ctx, "_debusine")
	_ = inst.PushTree(ctx, "/srv/work/42/src", "/build/src", executor.FileOptions{UID: user.UID, GID: user.GID})
	code, err := inst.Exec(ctx, executor.Cmd{Args: []string{"dpkg-buildpackage", "-us", "-uc"}, Dir: "/build/src", User: user.Name})
	fmt.Println(code, err, ex.AutopkgtestArgs())
}
