// Command debusine is what a Debusine worker does with incusexec for one
// work request, end to end on a real Incus daemon:
//
//  1. a system tarball (debootstrapped and cached when none is given)
//     becomes the image artifact/<ID> (imagebuild, through the executor);
//  2. an ephemeral instance starts on the debusine profile (netbridge's
//     DebusineProfile: NIC host0 on a NAT-less bridge, root disk on a pool)
//     and counts as ready when systemd is up;
//  3. the worker creates the unprivileged user _debusine, pushes a source
//     tree owned by it, runs a build-like command as that user, and pulls
//     the results;
//  4. it prints the instance's statistics and the autopkgtest-virt-incus
//     arguments, stops the instance (which deletes it: it is ephemeral) and
//     deletes it (a no-op then, as a worker does in its finally clause);
//  5. it removes what it created (the image unless -keep-image, the
//     profile, the bridge, and a storage pool if it had to make one).
//
// Run it as root where Incus runs:
//
//	go run ./examples/debusine                      # the cached Debian tarball of the host's suite
//	go run ./examples/debusine -tarball rootfs.tar.zst -id bookworm-amd64 -out ./results
//
// Flags: -socket (default: the system daemon's), -tarball, -id, -pool,
// -owner, -out, -keep-image, -v.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/incusexec/incusexec/executor/incus"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/imagebuild"
	"github.com/incusexec/incusexec/imagebuild/imagetest"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/netbridge"
	incusclient "github.com/lxc/incus/v6/client"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() { <-ctx.Done(); stop() }()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// The user Debusine runs tasks as, and where the work happens.
const (
	taskUser = "_debusine"
	workDir  = "/srv/debusine"
)

type options struct {
	socket, tarball, id, pool, owner, out string
	keepImage, verbose                    bool
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var o options
	fs := flag.NewFlagSet("debusine", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.socket, "socket", "", "Incus unix `socket` (default: the system daemon's)")
	fs.StringVar(&o.tarball, "tarball", "", "system `tarball` (.tar, .tar.gz, .tar.xz, .tar.zst); default: debootstrap the host's suite (cached)")
	fs.StringVar(&o.id, "id", "", "artifact `ID`: the image is artifact/<ID> (default: debusine-example-<suite>)")
	fs.StringVar(&o.pool, "pool", "", "storage `pool` of the profile's root disk (default: default, else the first, else a dir pool made for the run)")
	fs.StringVar(&o.owner, "owner", "debusine-example", "owner `label` of everything created")
	fs.StringVar(&o.out, "out", "", "host `directory` for the results (default: a temporary one, removed)")
	fs.BoolVar(&o.keepImage, "keep-image", false, "keep the image for the next run")
	fs.BoolVar(&o.verbose, "v", false, "log what the library does")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := work(ctx, o, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "debusine: %v\n", err)
		if ctx.Err() != nil {
			return 130
		}
		return 1
	}
	return 0
}

func work(ctx context.Context, o options, stdout, stderr io.Writer) (err error) {
	start := time.Now()
	say := func(format string, args ...any) {
		fmt.Fprintf(stdout, "[%5.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	log := slog.New(slog.DiscardHandler)
	if o.verbose {
		log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	// Clean-up must outlive a cancelled ctx, and so must the connection:
	// the client keeps the context it was made with for its requests.
	bg := context.WithoutCancel(ctx)
	cleanupCtx := func() (context.Context, context.CancelFunc) { return context.WithTimeout(bg, 2*time.Minute) }

	suite := imagetest.HostSuite()
	meta := imagebuild.Metadata{OS: "debian"}
	if o.tarball == "" {
		say("no -tarball: debootstrapping Debian %s (minbase, systemd) or taking it from the cache", suite)
		if o.tarball, err = (imagetest.Debian{Suite: suite}).Tarball(); err != nil {
			return err
		}
		meta.Release, meta.Description = suite, "Debian "+suite+" (debusine example)"
	}
	if o.id == "" {
		o.id = "debusine-example-" + suite
	}

	c, err := incusclient.ConnectIncusUnixWithContext(bg, o.socket, nil)
	if err != nil {
		return fmt.Errorf("connect to Incus: %w", err)
	}
	pool, madePool, err := incus.EnsurePool(ctx, c, incus.PoolSpec{Name: o.pool, Fallback: "debusine-example",
		Owner: o.owner, Description: "created by the debusine example for " + o.owner})
	if err != nil {
		return err
	}
	b, err := incus.NewBackend(bg, incus.Config{
		Client:  c,
		Owner:   o.owner,
		Prefix:  "debusine-",
		Network: &netbridge.NetworkSpec{Prefix: "debusine", NAT: false},
		Profile: ptr(netbridge.DebusineProfile(o.owner, "", pool)),
		Ready:   instance.Ready{Systemd: true, Timeout: 3 * time.Minute},
		Logger:  log,
	})
	if err != nil {
		if madePool {
			cctx, cancel := cleanupCtx()
			defer cancel()
			err = errors.Join(err, incus.RemovePool(cctx, c, pool, o.owner))
		}
		return err
	}
	say("bridge %s %s (NAT off), profile %s (NIC host0, root on %s)", b.Network().Name, b.Network().IPv4, b.Profile().Name, pool)
	ex, err := b.Executor(incus.Image{ID: o.id, Tarball: o.tarball, Metadata: meta})
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := cleanupCtx()
		defer cancel()
		var removed []string
		if !o.keepImage {
			if rerr := ex.RemoveImage(cctx); rerr != nil {
				err = errors.Join(err, rerr)
			} else {
				removed = append(removed, "image "+ex.Image())
			}
		}
		changes, cerr := b.Cleanup(cctx)
		err = errors.Join(err, cerr)
		for _, ch := range changes {
			removed = append(removed, ch.Kind+" "+ch.Name)
		}
		if madePool && cerr == nil {
			if perr := incus.RemovePool(cctx, c, pool, o.owner); perr != nil {
				err = errors.Join(err, perr)
			} else {
				removed = append(removed, "storage-pool "+pool)
			}
		}
		b.Close()
		if len(removed) > 0 {
			say("cleaned up: %s", strings.Join(removed, ", "))
		}
	}()

	if err := ex.Available(ctx); err != nil {
		return err
	}
	t0 := time.Now()
	if err := ex.EnsureImage(ctx); err != nil {
		return err
	}
	say("image %s ready in %.1fs (system tarball %s)", ex.Image(), time.Since(t0).Seconds(), o.tarball)

	t0 = time.Now()
	inst, err := ex.Create(ctx, executor.Spec{Ephemeral: true, ID: "work-request-" + o.id})
	if err != nil {
		return err
	}
	defer func() {
		// A worker's finally clause: delete whatever happened.
		cctx, cancel := cleanupCtx()
		defer cancel()
		err = errors.Join(err, inst.Delete(cctx))
	}()
	if err := inst.Start(ctx); err != nil {
		return err
	}
	say("instance %s (ephemeral) up, systemd running, in %.1fs", inst.Name(), time.Since(t0).Seconds())

	user, err := inst.EnsureUser(ctx, taskUser)
	if err != nil {
		return err
	}
	say("user %s: uid %d, gid %d, home %s", user.Name, user.UID, user.GID, user.Home)

	src, err := os.MkdirTemp("", "debusine-src-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(src)
	if err := writeSourceTree(src); err != nil {
		return err
	}
	owned := executor.FileOptions{UID: user.UID, GID: user.GID}
	if err := inst.Mkdir(ctx, workDir, owned); err != nil {
		return err
	}
	if err := inst.PushTree(ctx, src, workDir+"/src", owned); err != nil {
		return err
	}
	say("pushed the source tree to %s/src, owned by %s", workDir, taskUser)

	t0 = time.Now()
	var mu sync.Mutex
	code, err := inst.Exec(ctx, executor.Cmd{
		Args:   []string{"sh", "-c", "./build " + workDir + "/out"},
		Dir:    workDir + "/src",
		User:   taskUser,
		Env:    map[string]string{"DEB_BUILD_OPTIONS": "nocheck"},
		Stdout: &prefixWriter{mu: &mu, w: stdout, prefix: "         | "},
		Stderr: &prefixWriter{mu: &mu, w: stdout, prefix: "         ! "},
	})
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("build exited with %d", code)
	}
	say("build as %s exited with %d in %.1fs", taskUser, code, time.Since(t0).Seconds())

	out := o.out
	if out == "" {
		if out, err = os.MkdirTemp("", "debusine-out-"); err != nil {
			return err
		}
		defer os.RemoveAll(out)
	}
	if err := inst.PullTree(ctx, workDir+"/out", out); err != nil {
		return err
	}
	entries, err := os.ReadDir(out)
	if err != nil {
		return err
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	say("pulled the results to %s: %s", out, strings.Join(names, ", "))

	st, err := ex.Statistics(ctx, inst)
	if err != nil {
		return err
	}
	say("statistics: cpu_count=%d cpu_time=%s memory=%s/%s disk_space=%s (%s available)",
		st.CPUs, st.CPUTime.Round(time.Millisecond), mib(st.MemoryUsed), mib(st.MemoryTotal), mib(st.DiskUsed), mib(st.DiskAvailable))
	say("autopkgtest-virt-incus %s", strings.Join(ex.AutopkgtestArgs(), " "))

	t0 = time.Now()
	if err := inst.Stop(ctx); err != nil {
		return err
	}
	names, err = ex.List(ctx)
	if err != nil {
		return err
	}
	if slices.Contains(names, inst.Name()) {
		return fmt.Errorf("ephemeral instance %s still exists after Stop", inst.Name())
	}
	say("stopped %s in %.1fs; being ephemeral, it is gone", inst.Name(), time.Since(t0).Seconds())
	return nil
}

// writeSourceTree writes a small "package" whose build step transforms
// its sources into artifacts, the way a package build turns a source tree
// into .debs and a .buildinfo.
func writeSourceTree(dir string) error {
	files := []struct {
		name string
		mode os.FileMode
		body string
	}{
		{"debian/changelog", 0o644, "hello (1.0-1) unstable; urgency=medium\n\n  * Example upload.\n\n -- Example <example@example.org>  Mon, 01 Jan 2024 00:00:00 +0000\n"},
		{"hello.in", 0o644, "#!/bin/sh\necho 'Hello, @WHO@!'\n"},
		{"build", 0o755, `#!/bin/sh
# A build-like step: run as the unprivileged user, write only to $1.
set -eu
out="$1"
mkdir -p "$out/usr/bin"
sed 's/@WHO@/Debusine/' hello.in > "$out/usr/bin/hello"
chmod 0755 "$out/usr/bin/hello"
version=$(sed -n '1s/.*(\(.*\)).*/\1/p' debian/changelog)
tar -C "$out" -czf "$out/hello_${version}.tar.gz" usr
{
  echo "Source: hello"
  echo "Version: $version"
  echo "Build-Architecture: $(dpkg --print-architecture 2>/dev/null || uname -m)"
  echo "Built-By: $(id -un) (uid $(id -u))"
  echo "Environment: DEB_BUILD_OPTIONS=${DEB_BUILD_OPTIONS:-}"
  echo "Checksums-Sha256:"
  (cd "$out" && sha256sum "hello_${version}.tar.gz" | sed 's/^/ /')
} > "$out/hello_${version}.buildinfo"
"$out/usr/bin/hello"
echo "built hello $version"
`},
	}
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(f.body), f.mode); err != nil {
			return err
		}
		if err := os.Chmod(p, f.mode); err != nil {
			return err
		}
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

func mib(b uint64) string { return fmt.Sprintf("%.1fMiB", float64(b)/(1<<20)) }

// prefixWriter prefixes every line, to set the task's output apart; the
// writers of stdout and stderr share mu and w.
type prefixWriter struct {
	mu      *sync.Mutex
	w       io.Writer
	prefix  string
	midLine bool
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if line == "" {
			continue
		}
		if !p.midLine {
			if _, err := io.WriteString(p.w, p.prefix); err != nil {
				return 0, err
			}
		}
		if _, err := io.WriteString(p.w, line); err != nil {
			return 0, err
		}
		p.midLine = !strings.HasSuffix(line, "\n")
	}
	return len(b), nil
}
