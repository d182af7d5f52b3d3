package instance_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/instance"
	incus "github.com/lxc/incus/v6/client"
)

// A Debusine-style task: an ephemeral instance, inputs pushed, the task run
// as an unprivileged user, results pulled, the instance deleted; and a
// periodic sweep of what crashed runs left behind.
func Example() {
	ctx := context.Background()
	c, err := incus.ConnectIncusUnix("", nil)
	if err != nil {
		log.Fatal(err)
	}
	m, err := instance.New(c, instance.Config{Owner: "worker-1", StopGrace: 10 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	in, err := m.Create(ctx, instance.Spec{
		Image:     "artifact/1234",
		ID:        "task-5678",
		Ephemeral: true,
		Ready:     instance.Ready{Systemd: true, Timeout: 2 * time.Minute},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer in.Delete(ctx)

	if err := in.Push(ctx, "/work/input.txt", strings.NewReader("hello\n"),
		executor.FileOptions{UID: 0, GID: 0, Mode: 0o644, MkdirAll: true}); err != nil {
		log.Fatal(err)
	}
	var out bytes.Buffer
	code, err := in.Exec(ctx, executor.Cmd{
		Args:    []string{"sh", "-c", "tr a-z A-Z < /work/input.txt"},
		User:    "_debusine",
		Stdout:  &out,
		Timeout: time.Hour,
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("exit %d: %s", code, out.String())

	// Elsewhere, periodically: instances of this owner older than a day.
	if _, err := m.GC(ctx, instance.GCOptions{OlderThan: 24 * time.Hour}); err != nil {
		log.Print(err)
	}
}

// A worker that runs task after task hands each finished instance to a
// reaper: the next task starts while the last one is being deleted.
func ExampleManager_NewReaper() {
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
	reaper := m.NewReaper(instance.ReaperConfig{})
	defer reaper.Close(ctx) // waits for the deletions before the process exits
	for range 3 {
		in, err := m.Create(ctx, instance.Spec{Image: "artifact/debian", Ephemeral: true})
		if err != nil {
			fmt.Println(err)
			return
		}
		code, err := in.Exec(ctx, executor.Cmd{Args: []string{"true"}})
		fmt.Println(code, err)
		_ = reaper.Reap(in) // returns at once
	}
}

// A gateway reaches a server instance over the bridge at the IPv4 address
// of its eth0, once the instance is ready on it.
func ExampleInstance_Addresses() {
	ctx := context.Background()
	c, err := incus.ConnectIncusUnix("", nil)
	if err != nil {
		log.Fatal(err)
	}
	m, err := instance.New(c, instance.Config{Owner: "gateway"})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	in, err := m.Create(ctx, instance.Spec{
		Image: "artifact/server",
		Ready: instance.Ready{NIC: "eth0", Family: "inet", Timeout: time.Minute},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer in.Delete(ctx)

	addrs, err := in.Addresses(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, a := range addrs {
		if a.NIC == "eth0" && a.Addr.Is4() {
			fmt.Println("server at", net.JoinHostPort(a.Addr.String(), "4711"))
		}
	}
}

// A run of many short commands on an instance of the server on this host
// (an autopkgtest testbed, say): their output comes through a directory
// the host and the instance share, not through the server; at the end
// the instance is discarded, left to the server to stop and delete.
func ExampleInstance_UseOutputDir() {
	ctx := context.Background()
	c, err := incus.ConnectIncusUnix("", nil)
	if err != nil {
		log.Fatal(err)
	}
	m, err := instance.New(c, instance.Config{Owner: "testbed"})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	dir, err := instance.NewOutputDir("", "/var/lib/incusexec/output")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(filepath.Dir(dir.Host))
	in, err := m.Create(ctx, instance.Spec{
		Image:     "artifact/debian",
		Ephemeral: true,
		Devices:   map[string]map[string]string{"output": dir.Device()},
		Ready:     instance.Ready{Systemd: true, Timeout: 2 * time.Minute},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer in.Discard(ctx)
	if err := in.UseOutputDir(ctx, dir); err != nil {
		log.Print(err) // the commands go through the server's recorded output instead
	}
	for _, pkg := range []string{"dpkg", "apt", "libc6"} {
		var out bytes.Buffer
		if _, err := in.Exec(ctx, executor.Cmd{Args: []string{"dpkg-query", "-W", pkg}, Stdout: &out}); err != nil {
			log.Fatal(err)
		}
		fmt.Print(out.String())
	}
}
