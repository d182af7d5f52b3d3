package warmpool_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/instance/warmpool"
	incus "github.com/lxc/incus/v6/client"
)

// A worker keeps two Debian containers booted ahead of its tasks; each task
// claims one (in milliseconds instead of a boot) and deletes it when done.
// Another worker process opening the pool "debian" on the same server
// shares the instances without ever getting one twice.
func Example() {
	ctx := context.Background()
	c, err := incus.ConnectIncusUnix("", nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	m, err := instance.New(c, instance.Config{Owner: "worker"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()
	pool, err := warmpool.New(warmpool.Config{
		Name: "debian", Manager: m, Client: c,
		Size: 2, Refill: 1, MaxAge: time.Hour,
		Spec: instance.Spec{
			Image: "artifact/debian", Profiles: []string{"debusine"}, Ephemeral: true,
			Ready: instance.Ready{Systemd: true, NIC: "host0", Family: "inet", Timeout: 2 * time.Minute},
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pool.Close(context.Background()) // deletes the unclaimed ones

	in, err := pool.Claim(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer in.Delete(ctx)
	code, err := in.Exec(ctx, executor.Cmd{Args: []string{"true"}})
	fmt.Println(code, err)
}

// A command-line host fills the pool in one process and claims from it in
// later ones, with no daemon in between.
func Example_manual() {
	ctx := context.Background()
	c, err := incus.ConnectIncusUnix("", nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	m, err := instance.New(c, instance.Config{Owner: "worker"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()
	pool, err := warmpool.New(warmpool.Config{
		Name: "debian", Manager: m, Client: c, Size: 2, Manual: true,
		Spec: instance.Spec{Image: "artifact/debian", Profiles: []string{"debusine"}, Ephemeral: true,
			Ready: instance.Ready{Systemd: true, NIC: "host0", Family: "inet", Timeout: 2 * time.Minute}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pool.Detach() // the instances stay for the next process

	in, err := pool.Claim(ctx)
	if errors.Is(err, warmpool.ErrEmpty) {
		err = pool.Fill(ctx) // or launch one cold
	}
	if err != nil {
		fmt.Println(err)
		return
	}
	if in != nil {
		defer in.Delete(ctx)
	}
}
