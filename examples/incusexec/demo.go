package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/incusexec/incusexec/executor/incus"
	"github.com/incusexec/incusexec/imagebuild/imagetest"

	"golang.org/x/sync/errgroup"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/executor/fake"
	"github.com/incusexec/incusexec/imagebuild"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/netbridge"
)

const (
	demoOwner   = "incusexec-demo"
	demoPrefix  = "demo-"
	demoBridge  = "iedemo" // bridge iedemo-br
	demoProfile = "incusexec-demo"
	demoAlias   = "demo/shared"
	demoUser    = "demo"
)

// demoEnv is a backend made ready for the demo, and how to undo it.
type demoEnv struct {
	ex executor.Executor
	// image says how the image was made, after EnsureImage.
	image string
	// cleanup removes what the demo created and says what it removed.
	cleanup func(ctx context.Context) ([]string, error)
}

func cmdDemo(ctx context.Context, a *app, args []string) (err error) {
	fs := a.flagSet("demo")
	backend := fs.String("backend", "incus", "`incus` (the real daemon) or fake (executor/fake, in memory, no Incus)")
	debian := fs.Bool("debian", false, "use the Debian system tarball (debootstrap, cached) instead of busybox")
	pool := fs.String("pool", "", "storage `pool`, created (btrfs on a loop file where the daemon can, else dir) and removed again when missing (default: default, else the first pool, else incusexec)")
	pos, _, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErr("unexpected arguments %q", pos)
	}
	start := time.Now()
	say := func(format string, args ...any) {
		fmt.Fprintf(a.stdout, "[%5.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	shared, err := os.MkdirTemp("", "incusexec-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(shared)
	// Writable by the container's root, which is an unprivileged host uid.
	if err := os.Chmod(shared, 0o777); err != nil {
		return err
	}

	var env *demoEnv
	switch *backend {
	case "fake":
		say("backend: executor/fake, the in-memory executor; NO Incus is involved: instances are state machines,")
		say("         commands are simulated (echo, cat, sh -c 'exit N', id, touch, ...), mounts are real host directories")
		env = fakeDemo(shared)
	case "incus":
		env, err = a.incusDemo(ctx, say, shared, *pool, *debian)
		if err != nil {
			return err
		}
	default:
		return usageErr("--backend %q: want incus or fake", *backend)
	}
	defer func() {
		cctx, cancel := cleanupCtx(ctx)
		defer cancel()
		removed, cerr := env.cleanup(cctx)
		if len(removed) > 0 {
			say("cleaned up: %s", strings.Join(removed, ", "))
		}
		if cerr != nil {
			err = errors.Join(err, fmt.Errorf("clean-up: %w", cerr))
		} else if err == nil {
			say("done: nothing the demo created is left")
		}
	}()

	if err := env.ex.Available(ctx); err != nil {
		return err
	}
	t0 := time.Now()
	if err := env.ex.EnsureImage(ctx); err != nil {
		return err
	}
	say("image %s ready in %s %s", env.ex.Image(), time.Since(t0).Round(time.Millisecond), env.image)

	t0 = time.Now()
	results, err := demoTasks(ctx, env.ex)
	if err != nil {
		return err
	}
	say("3 tasks, each in its own ephemeral instance, in parallel (%.1fs):", time.Since(t0).Seconds())
	tw := tabwriter.NewWriter(a.stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "         task\tinstance\texit\ttime\tcpu\tmemory\toutput\n")
	for _, r := range results {
		fmt.Fprintf(tw, "         %s\t%s\t%d\t%.1fs\t%s\t%s\t%s\n", r.task, r.instance, r.exit, r.took.Seconds(),
			r.stats.CPUTime.Round(time.Millisecond), mib(r.stats.MemoryUsed), r.output)
	}
	tw.Flush()

	t0 = time.Now()
	m, err := demoMount(ctx, env.ex, shared)
	if err != nil {
		return err
	}
	say("shared mount %q at %s in %s and %s (%.1fs):", demoAlias, m.path, m.a, m.b, time.Since(t0).Seconds())
	for _, l := range m.log {
		fmt.Fprintf(a.stdout, "         %s\n", l)
	}
	say("autopkgtest-virt-incus arguments: %s", strings.Join(env.ex.AutopkgtestArgs(), " "))
	return nil
}

func mib(b uint64) string { return fmt.Sprintf("%.1fMiB", float64(b)/(1<<20)) }

// fakeDemo is the demo on executor/fake.
func fakeDemo(shared string) *demoEnv {
	ex := fake.New()
	ex.Alias = "fake/busybox"
	ex.Profile = demoProfile
	ex.Prefix = demoPrefix
	ex.AllowedRoots = []string{shared}
	return &demoEnv{ex: ex, image: "(simulated)", cleanup: func(ctx context.Context) ([]string, error) {
		names, err := ex.List(ctx)
		var removed []string
		for _, n := range names {
			if in := ex.Instance(n); in != nil {
				err = errors.Join(err, in.Delete(ctx))
				removed = append(removed, "instance "+n)
			}
		}
		return removed, err
	}}
}

// incusDemo prepares the real daemon: a storage pool when there is none,
// a NAT-less bridge and a profile, and an executor bound to an image built
// from busybox-static (or the Debian tarball).
func (a *app) incusDemo(ctx context.Context, say func(string, ...any), shared, pool string, debian bool) (*demoEnv, error) {
	cfg, _, err := a.executorConfig()
	if err != nil {
		return nil, err
	}
	if a.g.owner == "" {
		cfg.Owner = demoOwner
	}
	cfg.Prefix = demoPrefix
	cfg.AllowedRoots = []string{shared}
	cfg.StopGrace = 10 * time.Second
	where := cfg.Socket
	switch {
	case cfg.Remote != "":
		where = cfg.Remote
	case where == "":
		where = "the default socket"
	}
	say("backend: Incus at %s; everything created is labelled owner=%s", where, cfg.Owner)

	ns := netbridge.NetworkSpec{Prefix: demoBridge, NAT: false}
	ps := netbridge.ProfileSpec{Name: demoProfile, NICName: "eth0", Pool: pool}
	img := incus.Image{ID: "incusexec-demo-busybox", Metadata: imagebuild.Metadata{
		Description: "incusexec demo: busybox", OS: "busybox", Release: "static",
	}}
	var imgNote string
	if debian {
		tarball, err := imagetest.Debian{Suite: imagetest.HostSuite()}.Tarball()
		if err != nil {
			return nil, fmt.Errorf("debian system tarball: %w", err)
		}
		ps = netbridge.DebusineProfile(cfg.Owner, "", pool)
		ps.Name = demoProfile
		cfg.Ready = instance.Ready{Systemd: true, Timeout: 3 * time.Minute}
		img = incus.Image{ID: "incusexec-demo-debian-" + imagetest.HostSuite(), Tarball: tarball, Metadata: imagebuild.Metadata{
			Description: "incusexec demo: Debian " + imagetest.HostSuite(), OS: "debian", Release: imagetest.HostSuite(),
		}}
		imgNote = "(Debian " + imagetest.HostSuite() + " system tarball " + tarball + ", split mode)"
	} else {
		tarball, err := imagetest.Busybox()
		if err != nil {
			return nil, err
		}
		img.Open = func(context.Context) (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(tarball)), nil }
		cfg.Ready = instance.Ready{NIC: "eth0", Family: "inet", Timeout: time.Minute}
		imgNote = fmt.Sprintf("(a %.1f MB system tarball built from %s, imported in split mode)", float64(len(tarball))/1e6, imagetest.BusyboxPath)
	}

	res, err := setup(ctx, a, cfg, ns, ps)
	if err != nil {
		return nil, err
	}
	b := res.backend
	if res.poolCreated {
		say("storage pool %s created (driver %s: %s); the demo removes it at the end", res.pool, res.poolChoice.Driver, res.poolChoice.Why)
	} else {
		say("storage pool %s (exists)", res.pool)
	}
	n := b.Network()
	say("bridge %s %s (NAT off), profile %s: %s", n.Name, n.IPv4, b.Profile().Name, changesSummary(res.changes()))
	ex, err := b.Executor(img)
	if err != nil {
		b.Close()
		return nil, err
	}
	return &demoEnv{ex: ex, image: imgNote, cleanup: func(ctx context.Context) ([]string, error) {
		defer b.Close()
		var removed []string
		deleted, err := b.GC(ctx, 0, nil)
		for _, d := range deleted {
			removed = append(removed, "instance "+d)
		}
		if rerr := ex.RemoveImage(ctx); rerr != nil {
			err = errors.Join(err, rerr)
		} else {
			removed = append(removed, "image "+ex.Image())
		}
		changes, cerr := b.Cleanup(ctx)
		err = errors.Join(err, cerr)
		for _, c := range changes {
			removed = append(removed, c.Kind+" "+c.Name)
		}
		if res.poolCreated && cerr == nil {
			if perr := incus.RemovePool(ctx, b.Client(), res.pool, cfg.Owner); perr != nil {
				err = errors.Join(err, perr)
			} else {
				removed = append(removed, "storage-pool "+res.pool)
			}
		}
		return removed, err
	}}, nil
}

func changesSummary(ch []netbridge.Change) string {
	if len(ch) == 0 {
		return "already as specified"
	}
	var s []string
	for _, c := range ch {
		s = append(s, string(c.Action)+" "+c.Kind+" "+c.Name)
	}
	return strings.Join(s, ", ")
}

// taskResult is one demo task's outcome.
type taskResult struct {
	task, instance string
	exit           int
	took           time.Duration
	stats          executor.Stats
	output         string
}

// demoTasks runs three tasks in parallel, each in an ephemeral instance
// of its own, the way a task runner does: create, start, push, run (as an
// unprivileged user), read the statistics, delete.
func demoTasks(ctx context.Context, ex executor.Executor) ([]taskResult, error) {
	type task struct {
		name string
		run  func(ctx context.Context, in executor.Instance) (int, string, error)
	}
	tasks := []task{
		{"hello", func(ctx context.Context, in executor.Instance) (int, string, error) {
			r, err := executor.Output(ctx, in, executor.Cmd{Args: []string{"echo", "hello from", in.Name()}})
			return r.ExitCode, strings.TrimSpace(string(r.Stdout)), err
		}},
		{"as-user", func(ctx context.Context, in executor.Instance) (int, string, error) {
			u, err := in.EnsureUser(ctx, demoUser)
			if err != nil {
				return 0, "", err
			}
			const input = "/srv/task/input.txt"
			err = in.Push(ctx, input, strings.NewReader("input pushed by the host"),
				executor.FileOptions{UID: u.UID, GID: u.GID, Mode: 0o600, MkdirAll: true})
			if err != nil {
				return 0, "", err
			}
			r, err := executor.Output(ctx, in, executor.Cmd{Args: []string{"cat", input}, User: demoUser})
			if err != nil || r.ExitCode != 0 {
				return r.ExitCode, string(r.Stderr), err
			}
			id, err := executor.Output(ctx, in, executor.Cmd{Args: []string{"id", "-u"}, User: demoUser})
			return id.ExitCode, fmt.Sprintf("%q read by %s (uid %s)", r.Stdout, demoUser, strings.TrimSpace(string(id.Stdout))), err
		}},
		{"exit-code", func(ctx context.Context, in executor.Instance) (int, string, error) {
			r, err := executor.Output(ctx, in, executor.Cmd{Args: []string{"sh", "-c", "exit 3"}})
			return r.ExitCode, "sh -c 'exit 3'", err
		}},
	}
	results := make([]taskResult, len(tasks))
	g, gctx := errgroup.WithContext(ctx)
	for i, t := range tasks {
		g.Go(func() error {
			start := time.Now()
			in, err := ex.Create(gctx, executor.Spec{Ephemeral: true, ID: "demo-" + t.name})
			if err != nil {
				return fmt.Errorf("task %s: %w", t.name, err)
			}
			defer func() {
				cctx, cancel := cleanupCtx(ctx)
				defer cancel()
				_ = in.Delete(cctx)
			}()
			if err := in.Start(gctx); err != nil {
				return fmt.Errorf("task %s: %w", t.name, err)
			}
			code, out, err := t.run(gctx, in)
			if err != nil {
				return fmt.Errorf("task %s in %s: %w", t.name, in.Name(), err)
			}
			st, err := ex.Statistics(gctx, in)
			if err != nil {
				return fmt.Errorf("task %s: statistics: %w", t.name, err)
			}
			if err := in.Delete(gctx); err != nil {
				return fmt.Errorf("task %s: %w", t.name, err)
			}
			results[i] = taskResult{task: t.name, instance: in.Name(), exit: code, took: time.Since(start), stats: st, output: out}
			return nil
		})
	}
	return results, g.Wait()
}

// mountResult is what the shared-mount part saw.
type mountResult struct {
	a, b, path string
	log        []string
}

// demoMount shares one host directory between two instances by alias:
// the host writes, one instance reads and writes, the other reads what it
// wrote, and the reference count keeps the mount while one hold remains.
func demoMount(ctx context.Context, ex executor.Executor, shared string) (mountResult, error) {
	var ins [2]executor.Instance
	var mu sync.Mutex
	defer func() {
		cctx, cancel := cleanupCtx(ctx)
		defer cancel()
		for _, in := range ins {
			if in != nil {
				_ = in.Delete(cctx)
			}
		}
	}()
	g, gctx := errgroup.WithContext(ctx)
	for i := range ins {
		g.Go(func() error {
			in, err := ex.Create(gctx, executor.Spec{ID: "demo-mount"})
			if err != nil {
				return err
			}
			mu.Lock()
			ins[i] = in
			mu.Unlock()
			return in.Start(gctx)
		})
	}
	if err := g.Wait(); err != nil {
		return mountResult{}, err
	}
	a, b := ins[0], ins[1]
	res := mountResult{a: a.Name(), b: b.Name()}
	logf := func(format string, args ...any) { res.log = append(res.log, fmt.Sprintf(format, args...)) }
	if err := os.WriteFile(filepath.Join(shared, "greeting.txt"), []byte("written on the host\n"), 0o644); err != nil {
		return res, err
	}
	for _, in := range []executor.Instance{a, b, a} { // a twice: two holds
		p, err := in.Mount(ctx, demoAlias, shared, executor.MountOptions{})
		if err != nil {
			return res, err
		}
		res.path = p
	}
	run := func(in executor.Instance, args ...string) (executor.Result, error) {
		r, err := executor.Output(ctx, in, executor.Cmd{Args: args})
		if err == nil && r.ExitCode != 0 {
			err = fmt.Errorf("%s: %q exited with %d: %s", in.Name(), args, r.ExitCode, r.Stderr)
		}
		return r, err
	}
	r, err := run(a, "cat", res.path+"/greeting.txt")
	if err != nil {
		return res, err
	}
	logf("%s reads the host's file: %q", a.Name(), strings.TrimSpace(string(r.Stdout)))
	if _, err := run(a, "touch", res.path+"/from-"+a.Name()); err != nil {
		return res, err
	}
	if _, err := os.Stat(filepath.Join(shared, "from-"+a.Name())); err != nil {
		return res, fmt.Errorf("file written in %s is not on the host: %w", a.Name(), err)
	}
	logf("%s writes from-%s: the host sees it in %s", a.Name(), a.Name(), shared)
	if _, err := run(b, "cat", res.path+"/from-"+a.Name()); err != nil {
		return res, err
	}
	logf("%s sees from-%s too", b.Name(), a.Name())
	if err := a.Unmount(ctx, demoAlias); err != nil {
		return res, err
	}
	if _, err := run(a, "cat", res.path+"/greeting.txt"); err != nil {
		return res, fmt.Errorf("after releasing one of two holds: %w", err)
	}
	logf("%s held the alias twice: after one Unmount it is still mounted", a.Name())
	if err := a.Unmount(ctx, demoAlias); err != nil {
		return res, err
	}
	if r, err := executor.Output(ctx, a, executor.Cmd{Args: []string{"cat", res.path + "/greeting.txt"}}); err != nil || r.ExitCode == 0 {
		return res, fmt.Errorf("after the last Unmount %s still reads the mount (exit %d, %v)", a.Name(), r.ExitCode, err)
	}
	logf("after the second Unmount it is gone from %s, and still there in %s", a.Name(), b.Name())
	if _, err := run(b, "cat", res.path+"/greeting.txt"); err != nil {
		return res, err
	}
	if err := b.Unmount(ctx, demoAlias); err != nil {
		return res, err
	}
	for _, in := range ins {
		if err := in.Delete(ctx); err != nil {
			return res, err
		}
	}
	return res, nil
}
