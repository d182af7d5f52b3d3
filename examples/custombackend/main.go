// Command custombackend is a backend of its own for the executor
// interfaces, one that is not Incus: a chroot executor, as a host without
// Incus (or a systemd-style worker) could write. It passes the same
// conformance suite (executor/executortest) as the Incus backend and the
// fake: `go test ./examples/custombackend` runs it.
//
//	go run ./examples/custombackend      # as root: a few tasks on the chroot executor
//
// How it maps the interfaces:
//
//   - the image is a busybox root file system built from the host's
//     busybox-static (EnsureImage), under Root/image;
//   - an instance is a copy of it in Root/instances/<name>, which is also
//     the mount/hostbind instance directory: hostbind bind-mounts sources at
//     <name>/data/<hash of alias>, which the chroot sees at
//     /data/<hash of alias>, as under Incus (reference-counted, allowlisted,
//     symlink swaps refused);
//   - a running instance has a main process (sleep, chrooted, in its own
//     process group); every command runs chrooted into the directory as the
//     user (resolved in the instance's /etc/passwd), in a process group of
//     its own, which timeouts, cancellation, Stop and Delete kill;
//   - files are read and written through os.Root, so no path, symlink or
//     ".." in an instance leads outside its directory;
//   - statistics come from /proc (the processes of the instance's process
//     groups) and the directory's size.
//
// Limits, honestly: a chroot is not a security boundary. The instance's
// root can escape it (and sees the host's network, PIDs and kernel); a
// process that leaves its process group (setsid) escapes Stop; the record of
// mount holds (mounts.json) lies in the instance's root directory, where the
// instance's root can read and change it; there is no /proc or /sys inside,
// no network of its own, no resource limits, and Spec.Profiles, Devices and
// Config are refused. Running tasks you trust on a host without Incus is what
// it is for; a real systemd-style backend would use systemd-nspawn or
// transient units with their own namespaces and cgroups, behind the same
// interfaces.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/incusexec/incusexec/executor"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := demo(ctx, os.Stdout.WriteString); err != nil {
		fmt.Fprintln(os.Stderr, "custombackend:", err)
		os.Exit(1)
	}
}

// demo runs a task runner's steps on the chroot executor, through the
// executor interfaces only.
func demo(ctx context.Context, print func(string) (int, error)) error {
	say := func(format string, args ...any) { print(fmt.Sprintf(format+"\n", args...)) }
	root, err := os.MkdirTemp("", "custombackend-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	shared := filepath.Join(root, "shared")
	if err := os.Mkdir(shared, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(shared, "input.txt"), []byte("from the host\n"), 0o644); err != nil {
		return err
	}
	cx, err := New(Config{Root: filepath.Join(root, "backend"), AllowedRoots: []string{shared}, Owner: "custombackend"})
	if err != nil {
		return err
	}
	defer cx.Close(context.WithoutCancel(ctx))
	var ex executor.Executor = cx
	if err := ex.Available(ctx); err != nil {
		return err
	}
	t0 := time.Now()
	if err := ex.EnsureImage(ctx); err != nil {
		return err
	}
	say("image %s built in %s", ex.Image(), time.Since(t0).Round(time.Millisecond))
	in, err := ex.Create(ctx, executor.Spec{Ephemeral: true, ID: "custombackend-demo"})
	if err != nil {
		return err
	}
	if err := in.Start(ctx); err != nil {
		return err
	}
	say("instance %s started (a chroot directory with a main process)", in.Name())
	u, err := in.EnsureUser(ctx, "worker")
	if err != nil {
		return err
	}
	p, err := in.Mount(ctx, "shared/input", shared, executor.MountOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	r, err := executor.Output(ctx, in, executor.Cmd{Args: []string{"sh", "-c", "id -un; cat " + p + "/input.txt; touch " + p + "/x 2>/dev/null || echo read-only"}, User: u.Name})
	if err != nil {
		return err
	}
	say("as %s (uid %d), with %s mounted at %s:\n  %s", u.Name, u.UID, shared, p, strings.ReplaceAll(strings.TrimSpace(string(r.Stdout)), "\n", "\n  "))
	r, err = executor.Output(ctx, in, executor.Cmd{Args: []string{"sh", "-c", "exit 3"}})
	if err != nil {
		return err
	}
	say("sh -c 'exit 3' exited with %d", r.ExitCode)
	st, err := ex.Statistics(ctx, in)
	if err != nil {
		return err
	}
	say("statistics: %d CPUs, cpu time %s, memory %.1f MiB, disk %.1f MiB", st.CPUs, st.CPUTime, float64(st.MemoryUsed)/(1<<20), float64(st.DiskUsed)/(1<<20))
	if err := in.Stop(ctx); err != nil {
		return err
	}
	left, err := ex.List(ctx)
	if err != nil {
		return err
	}
	say("stopped; ephemeral, so deleted with its mounts (instances left: %d)", len(left))
	return nil
}
