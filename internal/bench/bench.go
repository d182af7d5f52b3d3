package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	incus "github.com/lxc/incus/v6/client"
	"github.com/lxc/incus/v6/shared/api"
	"golang.org/x/sync/errgroup"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/imagebuild"
	"github.com/incusexec/incusexec/imagebuild/imagetest"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/instance/warmpool"
	"github.com/incusexec/incusexec/internal/incusop"
	"github.com/incusexec/incusexec/internal/testimage"
	"github.com/incusexec/incusexec/netbridge"
)

// Config says what to measure where.
type Config struct {
	// Client is connected to the daemon under test.
	Client incus.InstanceServer
	// CLIEnv is added to the environment of every incus command, e.g.
	// INCUS_DIR=... for a private daemon (nothing for the system's).
	CLIEnv []string
	// Tarball is the uncompressed Debian system tarball (with systemd) the
	// imports and launches use.
	Tarball string
	// Pools are existing storage pools to run on; when empty, Run creates a
	// dir pool and, where the daemon supports it, a btrfs pool on a loop
	// file, and deletes them at the end.
	Pools []string
	// Drivers, when Pools is empty, limits the pools Run creates to these
	// drivers (dir, btrfs); empty means both (btrfs where supported).
	Drivers []string
	// Runs is the number of runs per side (3 when zero; 1 with Quick).
	Runs int
	// Concurrency bounds the parallel tasks of the throughput measurement
	// (4 when zero).
	Concurrency int
	// Quick runs everything once with small files and few tasks.
	Quick bool
	// Only, when not empty, limits the run to these measurements: import,
	// ready, exec, files, teardown, throughput, warm (warm implies ready).
	Only []string
	// TmpDir holds the files compared (os.TempDir when empty).
	TmpDir string
	// Progress, when set, receives one line per step.
	Progress io.Writer
	// Logger receives what the library does; discarded when nil.
	Logger *slog.Logger
}

type runner struct {
	cfg   Config
	c     incus.InstanceServer
	m     *instance.Manager
	owner string
	tag   string
	dir   string
	runs  int
	t     *Table
	log   *slog.Logger

	network  string
	images   []string // fingerprints to delete
	profiles []string
	pools    []string // created by us
	debian   string   // alias of the Debian image launched
	busybox  string   // alias of the busybox image
}

func (r *runner) want(what string) bool {
	if len(r.cfg.Only) == 0 {
		return true
	}
	return slices.Contains(r.cfg.Only, what) || (what == "ready" && slices.Contains(r.cfg.Only, "warm"))
}

func (r *runner) progress(format string, args ...any) {
	if r.cfg.Progress != nil {
		fmt.Fprintf(r.cfg.Progress, "bench: "+format+"\n", args...)
	}
}

// Run measures everything and returns the table; it removes what it
// created before returning.
func Run(ctx context.Context, cfg Config) (tab *Table, err error) {
	if cfg.Client == nil {
		return nil, errors.New("bench: no Incus client")
	}
	if cfg.Tarball == "" {
		return nil, errors.New("bench: no Debian system tarball")
	}
	if _, err := os.Stat(cfg.Tarball); err != nil {
		return nil, fmt.Errorf("bench: Debian tarball: %w", err)
	}
	for _, d := range cfg.Drivers {
		if d != "dir" && d != "btrfs" {
			return nil, fmt.Errorf("bench: driver %q: want dir or btrfs", d)
		}
	}
	if _, err := exec.LookPath("incus"); err != nil {
		return nil, fmt.Errorf("bench: the incus command is needed as the reference: %w", err)
	}
	r := &runner{cfg: cfg, c: cfg.Client, runs: cfg.Runs, log: cfg.Logger}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.runs <= 0 {
		r.runs = 3
		if cfg.Quick {
			r.runs = 1
		}
	}
	if r.cfg.Concurrency <= 0 {
		r.cfg.Concurrency = 4
	}
	r.tag = "ieb" + randHex(3)
	r.owner = "incusexec-bench-" + r.tag
	r.t = &Table{Date: time.Now(), Machine: r.machine(ctx), Quick: cfg.Quick}
	r.dir, err = os.MkdirTemp(cfg.TmpDir, "incusexec-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(r.dir)
	r.m, err = instance.New(r.c, instance.Config{Owner: r.owner, Logger: r.log})
	if err != nil {
		return nil, err
	}
	defer r.m.Close()
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
		defer cancel()
		if cerr := r.cleanup(cctx); cerr != nil {
			err = errors.Join(err, fmt.Errorf("bench: clean-up: %w", cerr))
		}
	}()

	pools, err := r.setup(ctx)
	if err != nil {
		return nil, err
	}
	if err := r.imports(ctx, r.want("import")); err != nil {
		return nil, err
	}
	for i, pool := range pools {
		if err := r.onPool(ctx, pool, i == 0); err != nil {
			return nil, fmt.Errorf("bench: on pool %s: %w", pool.name, err)
		}
	}
	return r.t, nil
}

func (r *runner) machine(ctx context.Context) string {
	host, _ := os.Hostname()
	s := fmt.Sprintf("%s, %d CPUs, %s/%s", host, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH)
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			s += ", load " + strings.Join(f[:3], " ")
		}
	}
	if out, err := r.cli(ctx, "version"); err == nil {
		s += ", incus " + strings.Join(strings.Fields(out), " ")
	}
	return s
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
}

// cli runs incus with args and returns its standard output.
func (r *runner) cli(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "incus", args...)
	cmd.Env = append(os.Environ(), r.cfg.CLIEnv...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("incus %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

type poolInfo struct {
	name, driver string
	bbProfile    string
	debProfile   string
}

func (r *runner) setup(ctx context.Context) ([]poolInfo, error) {
	c := incusop.Bind(ctx, r.c)
	var pools []poolInfo
	if len(r.cfg.Pools) > 0 {
		for _, name := range r.cfg.Pools {
			p, _, err := c.GetStoragePool(name)
			if err != nil {
				return nil, fmt.Errorf("bench: storage pool %s: %w", name, err)
			}
			pools = append(pools, poolInfo{name: name, driver: p.Driver})
		}
	} else {
		drivers := []string{"dir"}
		if srv, _, err := c.GetServer(); err == nil {
			for _, d := range srv.Environment.StorageSupportedDrivers {
				if d.Name == "btrfs" {
					if _, err := exec.LookPath("mkfs.btrfs"); err == nil {
						drivers = append(drivers, "btrfs")
					}
				}
			}
		}
		if len(r.cfg.Drivers) > 0 {
			drivers = slices.DeleteFunc(drivers, func(d string) bool { return !slices.Contains(r.cfg.Drivers, d) })
			if len(drivers) == 0 {
				return nil, fmt.Errorf("bench: no pool of driver %v can be made here (btrfs needs the daemon's support and mkfs.btrfs)", r.cfg.Drivers)
			}
		}
		for _, drv := range drivers {
			name := r.tag + "-" + drv
			cfg := map[string]string{}
			if drv == "btrfs" {
				cfg["size"] = "6GiB"
			}
			r.progress("create %s storage pool %s", drv, name)
			if err := c.CreateStoragePool(api.StoragePoolsPost{Name: name, Driver: drv,
				StoragePoolPut: api.StoragePoolPut{Config: cfg, Description: "incusexec bench"}}); err != nil {
				return nil, fmt.Errorf("bench: create %s pool: %w", drv, err)
			}
			r.pools = append(r.pools, name)
			pools = append(pools, poolInfo{name: name, driver: drv})
		}
	}
	r.network = r.tag + "br"
	var err error
	nb := netbridge.New(r.c, netbridge.Options{Logger: r.log})
	for attempt := range 3 {
		_, err = nb.Ensure(ctx, netbridge.NetworkSpec{Name: r.network, Owner: r.owner, Description: "incusexec bench (no NAT)"})
		if err == nil {
			break
		}
		time.Sleep(time.Duration(attempt+1) * time.Second)
	}
	if err != nil {
		return nil, fmt.Errorf("bench: create bridge: %w", err)
	}
	for i := range pools {
		p := &pools[i]
		for _, nic := range []string{"eth0", "host0"} {
			name := r.tag + "-" + p.driver + "-" + nic
			if err := c.CreateProfile(api.ProfilesPost{Name: name, ProfilePut: api.ProfilePut{
				Description: "incusexec bench",
				Config:      map[string]string{executor.OwnerKey: r.owner},
				Devices: map[string]map[string]string{
					"root": {"type": "disk", "path": "/", "pool": p.name},
					"eth0": {"type": "nic", "network": r.network, "name": nic},
				}}}); err != nil {
				return nil, fmt.Errorf("bench: create profile: %w", err)
			}
			r.profiles = append(r.profiles, name)
			if nic == "eth0" {
				p.bbProfile = name
			} else {
				p.debProfile = name
			}
		}
	}
	// Busybox, for what does not need systemd.
	data, err := testimage.BusyboxTarball()
	if err != nil {
		return nil, err
	}
	r.busybox = r.tag + "/busybox"
	op, err := c.CreateImage(api.ImagesPost{Aliases: []api.ImageAlias{{Name: r.busybox}}},
		&incus.ImageCreateArgs{MetaFile: bytes.NewReader(data), MetaName: "image.tar"})
	if err == nil {
		err = incusop.Wait(ctx, op, c)
	}
	if err != nil {
		return nil, fmt.Errorf("bench: import busybox: %w", err)
	}
	fp, _ := op.Get().Metadata["fingerprint"].(string)
	r.images = append(r.images, fp)
	return pools, nil
}

func (r *runner) cleanup(ctx context.Context) error {
	var errs []error
	if _, err := r.m.GC(ctx, instance.GCOptions{Concurrency: 4}); err != nil {
		errs = append(errs, err)
	}
	c := incusop.Bind(ctx, r.c)
	for _, fp := range r.images {
		if fp == "" {
			continue
		}
		op, err := c.DeleteImage(fp)
		if err == nil {
			err = incusop.Wait(ctx, op, c)
		}
		if err != nil && !api.StatusErrorCheck(err, 404) {
			errs = append(errs, fmt.Errorf("delete image %s: %w", fp, err))
		}
	}
	for _, p := range r.profiles {
		if err := c.DeleteProfile(p); err != nil && !api.StatusErrorCheck(err, 404) {
			errs = append(errs, fmt.Errorf("delete profile %s: %w", p, err))
		}
	}
	if r.network != "" {
		var err error
		for attempt := range 5 {
			if err = c.DeleteNetwork(r.network); err == nil || api.StatusErrorCheck(err, 404) {
				err = nil
				break
			}
			time.Sleep(time.Duration(attempt+1) * time.Second)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("delete network %s: %w", r.network, err))
		}
	}
	for _, p := range r.pools {
		if err := c.DeleteStoragePool(p); err != nil && !api.StatusErrorCheck(err, 404) {
			errs = append(errs, fmt.Errorf("delete storage pool %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// alternate runs a and b runs times each, a first on even runs and b first
// on odd ones.
func alternate(runs int, a, b func() (time.Duration, error)) (sa, sb []time.Duration, err error) {
	for i := range runs {
		first, second := a, b
		if i%2 == 1 {
			first, second = b, a
		}
		d1, err := first()
		if err != nil {
			return nil, nil, err
		}
		d2, err := second()
		if err != nil {
			return nil, nil, err
		}
		if i%2 == 1 {
			d1, d2 = d2, d1
		}
		sa, sb = append(sa, d1), append(sb, d2)
	}
	return sa, sb, nil
}

func timed(f func() error) (time.Duration, error) {
	t0 := time.Now()
	err := f()
	return time.Since(t0), err
}

func (r *runner) deleteImage(ctx context.Context, fp string) error {
	op, err := incusop.Bind(ctx, r.c).DeleteImage(fp)
	if err == nil {
		err = incusop.Wait(ctx, op, r.c)
	}
	return err
}

// imports measures (1): split and unified+zstd imports against incus image
// import of the same files, and leaves the Debian image imported (split).
func (r *runner) imports(ctx context.Context, measure bool) error {
	im := &imagebuild.Importer{Client: r.c, Logger: r.log, LockDir: filepath.Join(r.dir, "locks")}
	meta, err := imagebuild.MetadataTarball(imagebuild.Metadata{Architecture: runtime.GOARCH, Description: "incusexec bench (CLI split)", OS: "debian", Release: imagetest.HostSuite()})
	if err != nil {
		return err
	}
	metaPath := filepath.Join(r.dir, "meta.tar")
	if err := os.WriteFile(metaPath, meta, 0o644); err != nil {
		return err
	}
	n := 0
	ours := func(mode imagebuild.Mode, comp imagebuild.Compression, keep bool) func() (time.Duration, error) {
		return func() (time.Duration, error) {
			n++
			id := fmt.Sprintf("%s-%d", r.tag, n)
			var img imagebuild.Image
			d, err := timed(func() error {
				var err error
				img, err = im.Import(ctx, imagebuild.Source{ID: id, Path: r.cfg.Tarball,
					Metadata: imagebuild.Metadata{Description: "incusexec bench", OS: "debian", Release: imagetest.HostSuite()}},
					imagebuild.Options{Mode: mode, Compression: comp, Owner: r.owner})
				return err
			})
			if err != nil {
				return 0, err
			}
			if keep {
				r.images = append(r.images, img.Fingerprint)
				r.debian = img.Alias
				return d, nil
			}
			return d, r.deleteImage(ctx, img.Fingerprint)
		}
	}
	cli := func(files ...string) func() (time.Duration, error) {
		return func() (time.Duration, error) {
			n++
			alias := fmt.Sprintf("%s-cli-%d", r.tag, n)
			d, err := timed(func() error {
				_, err := r.cli(ctx, append([]string{"image", "import"}, append(files, "--alias", alias)...)...)
				return err
			})
			if err != nil {
				return 0, err
			}
			a, _, err := incusop.Bind(ctx, r.c).GetImageAlias(alias)
			if err != nil {
				return 0, err
			}
			return d, r.deleteImage(ctx, a.Target)
		}
	}
	if !measure {
		_, err = ours(imagebuild.Split, "", true)()
		return err
	}
	r.progress("import split ×%d each side", r.runs)
	a, b, err := alternate(r.runs, ours(imagebuild.Split, "", false), cli(metaPath, r.cfg.Tarball))
	if err != nil {
		return fmt.Errorf("split import: %w", err)
	}
	r.t.add("image import, split", "", sampleOf(a), "incus image import meta.tar rootfs.tar", sampleOf(b), 1.5)

	// The unified file the CLI imports is the one incusexec made, exported.
	r.progress("import unified+zstd ×%d each side", r.runs)
	unified := filepath.Join(r.dir, "unified")
	if err := os.Mkdir(unified, 0o755); err != nil {
		return err
	}
	img, err := im.Import(ctx, imagebuild.Source{ID: r.tag + "-u", Path: r.cfg.Tarball,
		Metadata: imagebuild.Metadata{Description: "incusexec bench", OS: "debian", Release: imagetest.HostSuite()}},
		imagebuild.Options{Mode: imagebuild.Unified, Compression: imagebuild.Zstd, Owner: r.owner})
	if err != nil {
		return fmt.Errorf("unified import: %w", err)
	}
	if _, err := r.cli(ctx, "image", "export", img.Fingerprint, unified+"/image"); err != nil {
		return err
	}
	if err := r.deleteImage(ctx, img.Fingerprint); err != nil {
		return err
	}
	files, err := filepath.Glob(unified + "/image*")
	if err != nil || len(files) != 1 {
		return fmt.Errorf("exported unified image: %v %v", files, err)
	}
	a, b, err = alternate(r.runs, ours(imagebuild.Unified, imagebuild.Zstd, false), cli(files[0]))
	if err != nil {
		return fmt.Errorf("unified import: %w", err)
	}
	os.Remove(files[0])
	r.t.add("image import, unified+zstd", "", sampleOf(a), "incus image import image.tar.zst", sampleOf(b), 0)

	// The image the launches use.
	_, err = ours(imagebuild.Split, "", true)()
	return err
}

var debianReady = instance.Ready{Systemd: true, NIC: "host0", Family: "inet", Timeout: 3 * time.Minute}

func systemdUp(s string) bool {
	s = strings.TrimSpace(s)
	return s == "running" || s == "degraded" || s == "maintenance"
}

// settle lets the daemon finish background work of a teardown, so that
// the next run does not pay for it.
func settle() { time.Sleep(time.Second) }

func (r *runner) onPool(ctx context.Context, p poolInfo, first bool) error {
	// A first launch on a pool unpacks the image there; nobody pays for it.
	r.progress("[%s] warm-up launches", p.driver)
	for _, spec := range []instance.Spec{
		{Image: r.debian, Profiles: []string{p.debProfile}, Ephemeral: true, Ready: debianReady},
		{Image: r.busybox, Profiles: []string{p.bbProfile}, Ephemeral: true},
	} {
		in, err := r.m.Create(ctx, spec)
		if err != nil {
			return fmt.Errorf("warm-up launch: %w", err)
		}
		if err := in.Delete(ctx); err != nil {
			return err
		}
	}
	var cold Sample
	steps := []struct {
		what string
		run  func() error
	}{
		{"ready", func() (err error) { cold, err = r.startToReady(ctx, p); return err }},
		{"exec", func() error {
			if !first {
				return nil
			}
			return r.exec(ctx, p)
		}},
		{"files", func() error { return r.files(ctx, p) }},
		{"teardown", func() error { return r.teardown(ctx, p) }},
		{"throughput", func() error { return r.throughput(ctx, p) }},
		{"warm", func() error { return r.warm(ctx, p, cold) }},
	}
	for _, s := range steps {
		if !r.want(s.what) {
			continue
		}
		if err := s.run(); err != nil {
			return err
		}
	}
	return nil
}

// startToReady measures (2) against the CLI loop and the raw API floor.
func (r *runner) startToReady(ctx context.Context, p poolInfo) (Sample, error) {
	r.progress("[%s] start to ready ×%d each side", p.driver, r.runs)
	var ours, cli, raw, rawStart []time.Duration
	sides := []func() error{
		func() error {
			var in *instance.Instance
			d, err := timed(func() error {
				var err error
				in, err = r.m.Create(ctx, instance.Spec{Image: r.debian, Profiles: []string{p.debProfile}, Ephemeral: true, Ready: debianReady})
				return err
			})
			if err != nil {
				return err
			}
			ours = append(ours, d)
			return in.Delete(ctx)
		},
		func() error {
			name := r.tag + "-cli-" + randHex(3)
			t0 := time.Now()
			if _, err := r.cli(ctx, "launch", r.debian, name, "--ephemeral", "--profile", p.debProfile,
				"--config", executor.OwnerKey+"="+r.owner); err != nil {
				return err
			}
			for {
				out, _ := r.cli(ctx, "exec", name, "--", "systemctl", "is-system-running")
				if systemdUp(out) {
					break
				}
				if time.Since(t0) > 3*time.Minute {
					return fmt.Errorf("CLI launch of %s: not ready after 3 minutes (%q)", name, out)
				}
				time.Sleep(200 * time.Millisecond)
			}
			cli = append(cli, time.Since(t0))
			_, err := r.cli(ctx, "delete", "--force", name)
			return err
		},
		func() error {
			d, started, name, err := r.rawLaunch(ctx, p)
			if err != nil {
				return err
			}
			raw, rawStart = append(raw, d), append(rawStart, started)
			if len(raw) == 1 {
				r.bootNote(ctx, p, name)
			}
			return r.m.Instance(name).Delete(ctx)
		},
	}
	for i := range r.runs {
		for j := range sides {
			if err := sides[(i+j)%len(sides)](); err != nil {
				return Sample{}, fmt.Errorf("start to ready: %w", err)
			}
			settle()
		}
	}
	so := sampleOf(ours)
	st, rw := sampleOf(rawStart), sampleOf(raw)
	r.t.note("[%s] raw API start to ready: create+start operation %s, then boot until systemd running and host0 IPv4 %s (medians)",
		p.driver, fmtD(st.Median), fmtD(rw.Median-st.Median))
	r.t.add("start to ready (systemd running, host0 IPv4)", p.driver, so, "incus launch + exec is-system-running every 200ms", sampleOf(cli), 0.75)
	r.t.add("start to ready (systemd running, host0 IPv4)", p.driver, so, "raw API: create+start, poll every 20ms", sampleOf(raw), 1.1)
	return so, nil
}

// rawLaunch is the floor: one request that creates and starts, then the
// cheapest checks the API allows, every 20 ms.
func (r *runner) rawLaunch(ctx context.Context, p poolInfo) (ready, started time.Duration, name string, err error) {
	c := incusop.Bind(ctx, r.c)
	name = r.tag + "-raw-" + randHex(3)
	t0 := time.Now()
	op, err := c.CreateInstance(api.InstancesPost{Name: name, Start: true,
		Source: api.InstanceSource{Type: "image", Alias: r.debian},
		InstancePut: api.InstancePut{Ephemeral: true, Profiles: []string{p.debProfile},
			Config: map[string]string{executor.OwnerKey: r.owner}}})
	if err == nil {
		err = incusop.Wait(ctx, op, c)
	}
	if err != nil {
		return 0, 0, name, err
	}
	started = time.Since(t0)
	for time.Since(t0) < 3*time.Minute {
		var out, errb bytes.Buffer
		done := make(chan bool)
		op, err := c.ExecInstance(name, api.InstanceExecPost{Command: []string{"systemctl", "is-system-running"}, WaitForWS: true},
			&incus.InstanceExecArgs{Stdout: &out, Stderr: &errb, DataDone: done})
		if err == nil {
			if err = incusop.Wait(ctx, op, c); err == nil {
				<-done
			}
		}
		if err == nil && systemdUp(out.String()) {
			st, _, err := c.GetInstanceState(name)
			if err == nil && hasIPv4(st, "host0") {
				return time.Since(t0), started, name, nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return 0, 0, name, fmt.Errorf("raw launch of %s: not ready after 3 minutes", name)
}

// bootNote records where the boot of name went, as systemd saw it.
func (r *runner) bootNote(ctx context.Context, p poolInfo, name string) {
	var out, errb bytes.Buffer
	in := r.m.Instance(name)
	if _, err := in.Exec(ctx, executor.Cmd{Args: []string{"systemd-analyze", "time"}, Stdout: &out, Stderr: &errb}); err != nil {
		return
	}
	first, _, _ := strings.Cut(strings.TrimSpace(out.String()), "\n")
	out.Reset()
	if _, err := in.Exec(ctx, executor.Cmd{Args: []string{"systemd-analyze", "blame", "--no-pager"}, Stdout: &out, Stderr: &errb}); err != nil {
		return
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	for i := range lines {
		lines[i] = strings.Join(strings.Fields(lines[i]), " ")
	}
	r.t.note("[%s] systemd in the instance: %s; slowest units: %s", p.driver, first, strings.Join(lines[:min(4, len(lines))], ", "))
}

func hasIPv4(st *api.InstanceState, nic string) bool {
	n, ok := st.Network[nic]
	if !ok {
		return false
	}
	for _, a := range n.Addresses {
		if a.Family == "inet" && a.Scope == "global" {
			return true
		}
	}
	return false
}

// exec measures (3).
func (r *runner) exec(ctx context.Context, p poolInfo) error {
	in, err := r.m.Create(ctx, instance.Spec{Image: r.busybox, Profiles: []string{p.bbProfile}, Ephemeral: true})
	if err != nil {
		return err
	}
	defer in.Delete(context.WithoutCancel(ctx))
	n := 41
	if r.cfg.Quick {
		n = 5
	}
	r.progress("exec round trip ×%d each side", n)
	a, b, err := alternate(n, func() (time.Duration, error) {
		return timed(func() error {
			code, err := in.Exec(ctx, executor.Cmd{Args: []string{"true"}})
			if err == nil && code != 0 {
				err = fmt.Errorf("true exited %d", code)
			}
			return err
		})
	}, func() (time.Duration, error) {
		return timed(func() error { _, err := r.cli(ctx, "exec", in.Name(), "--", "true"); return err })
	})
	if err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	sa, sb := sampleOf(a), sampleOf(b)
	r.t.add("exec round trip p50", "", sa, "incus exec NAME -- true", sb, 0.6)
	r.t.add("exec round trip p99", "", sa.percentile(0.99), "incus exec NAME -- true", sb.percentile(0.99), 0)
	if err := r.execPaths(ctx, in, "exec true", n, "true"); err != nil {
		return err
	}
	if !r.cfg.Quick {
		return r.execPaths(ctx, in, "exec 'sleep 2; echo'", 5, "sh", "-c", "sleep 2; echo done")
	}
	return nil
}

func (r *runner) randomFile(name string, size int64) (string, error) {
	path := filepath.Join(r.dir, name)
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := io.CopyN(f, rand.Reader, size); err != nil {
		return "", err
	}
	return path, f.Close()
}

// files measures (4).
func (r *runner) files(ctx context.Context, p poolInfo) error {
	size := int64(64 << 20)
	label := "64 MiB"
	if r.cfg.Quick {
		size, label = 4<<20, "4 MiB"
	}
	src, err := r.randomFile("blob", size)
	if err != nil {
		return err
	}
	in, err := r.m.Create(ctx, instance.Spec{Image: r.busybox, Profiles: []string{p.bbProfile}, Ephemeral: true})
	if err != nil {
		return err
	}
	defer in.Delete(context.WithoutCancel(ctx))
	r.progress("[%s] push/pull %s ×%d each side", p.driver, label, r.runs)
	a, b, err := alternate(r.runs, func() (time.Duration, error) {
		f, err := os.Open(src)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		return timed(func() error { return in.Push(ctx, "/root/blob", f, executor.FileOptions{}) })
	}, func() (time.Duration, error) {
		return timed(func() error { _, err := r.cli(ctx, "file", "push", src, in.Name()+"/root/blob-cli"); return err })
	})
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}
	r.t.add("push "+label, p.driver, sampleOf(a), "incus file push", sampleOf(b), 1.0)
	dst := filepath.Join(r.dir, "pulled")
	a, b, err = alternate(r.runs, func() (time.Duration, error) {
		f, err := os.Create(dst)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		d, err := timed(func() error { _, err := in.Pull(ctx, "/root/blob", f); return err })
		if err == nil {
			err = sameSize(f, size)
		}
		return d, err
	}, func() (time.Duration, error) {
		os.Remove(dst)
		return timed(func() error { _, err := r.cli(ctx, "file", "pull", in.Name()+"/root/blob-cli", dst); return err })
	})
	os.Remove(dst)
	if err != nil {
		return fmt.Errorf("pull: %w", err)
	}
	r.t.add("pull "+label, p.driver, sampleOf(a), "incus file pull", sampleOf(b), 1.0)
	return nil
}

func sameSize(f *os.File, size int64) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() != size {
		return fmt.Errorf("pulled %d bytes, want %d", st.Size(), size)
	}
	return nil
}

// teardown measures (5) on running ephemeral busybox instances.
func (r *runner) teardown(ctx context.Context, p poolInfo) error {
	r.progress("[%s] teardown ×%d each side", p.driver, r.runs)
	launch := func() (*instance.Instance, error) {
		return r.m.Create(ctx, instance.Spec{Image: r.busybox, Profiles: []string{p.bbProfile}, Ephemeral: true})
	}
	a, b, err := alternate(r.runs, func() (time.Duration, error) {
		in, err := launch()
		if err != nil {
			return 0, err
		}
		d, err := timed(func() error { return in.Delete(ctx) })
		settle()
		return d, err
	}, func() (time.Duration, error) {
		in, err := launch()
		if err != nil {
			return 0, err
		}
		d, err := timed(func() error { _, err := r.cli(ctx, "delete", "--force", in.Name()); return err })
		settle()
		return d, err
	})
	if err != nil {
		return fmt.Errorf("teardown: %w", err)
	}
	r.t.add("teardown (running, ephemeral)", p.driver, sampleOf(a), "incus delete --force", sampleOf(b), 0)
	return nil
}

// throughput measures (6): tasks of launch, push 1 MiB, run, pull, delete.
func (r *runner) throughput(ctx context.Context, p poolInfo) error {
	tasks := 20
	if r.cfg.Quick {
		tasks = 3
	}
	src, err := r.randomFile("task-input", 1<<20)
	if err != nil {
		return err
	}
	payload, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	steps := []string{"launch", "push", "run", "pull", "delete"}
	var smu sync.Mutex
	stepTimes := map[string][]time.Duration{}
	record := func(side, step string, t0 time.Time) {
		smu.Lock()
		stepTimes[side+" "+step] = append(stepTimes[side+" "+step], time.Since(t0))
		smu.Unlock()
	}
	ours := func() (time.Duration, error) {
		return timed(func() error {
			g, gctx := errgroup.WithContext(ctx)
			g.SetLimit(r.cfg.Concurrency)
			for range tasks {
				g.Go(func() error {
					t0 := time.Now()
					in, err := r.m.Create(gctx, instance.Spec{Image: r.busybox, Profiles: []string{p.bbProfile}, Ephemeral: true})
					if err != nil {
						return err
					}
					done := false
					defer func() {
						if !done {
							in.Delete(context.WithoutCancel(ctx))
						}
					}()
					record("ours", "launch", t0)
					t0 = time.Now()
					if err := in.Push(gctx, "/root/in", bytes.NewReader(payload), executor.FileOptions{}); err != nil {
						return err
					}
					record("ours", "push", t0)
					t0 = time.Now()
					if code, err := in.Exec(gctx, executor.Cmd{Args: []string{"cp", "/root/in", "/root/out"}}); err != nil || code != 0 {
						return fmt.Errorf("task: exit %d, %v", code, err)
					}
					record("ours", "run", t0)
					t0 = time.Now()
					var out bytes.Buffer
					if _, err := in.Pull(gctx, "/root/out", &out); err != nil {
						return err
					}
					if out.Len() != len(payload) {
						return fmt.Errorf("task pulled %d bytes", out.Len())
					}
					record("ours", "pull", t0)
					t0 = time.Now()
					done = true
					defer record("ours", "delete", t0)
					return in.Delete(gctx)
				})
			}
			return g.Wait()
		})
	}
	dst := filepath.Join(r.dir, "task-output")
	cli := func() (time.Duration, error) {
		return timed(func() error {
			for i := range tasks {
				name := fmt.Sprintf("%s-t%d-%s", r.tag, i, randHex(2))
				cmds := [][]string{
					{"launch", r.busybox, name, "--ephemeral", "--profile", p.bbProfile, "--config", executor.OwnerKey + "=" + r.owner},
					{"file", "push", src, name + "/root/in"},
					{"exec", name, "--", "cp", "/root/in", "/root/out"},
					{"file", "pull", name + "/root/out", dst},
					{"delete", "--force", name},
				}
				for j, s := range cmds {
					t0 := time.Now()
					if _, err := r.cli(ctx, s...); err != nil {
						return err
					}
					record("cli", steps[j], t0)
				}
				os.Remove(dst)
			}
			return nil
		})
	}
	r.progress("[%s] throughput: %d tasks, concurrency %d, vs one by one through the CLI, ×%d each side", p.driver, tasks, r.cfg.Concurrency, r.runs)
	pid := 0
	if srv, _, err := incusop.Bind(ctx, r.c).GetServer(); err == nil {
		pid = srv.Environment.ServerPid
	}
	cpuOurs, cpuCLI := &cpuMeter{pid: pid}, &cpuMeter{pid: pid}
	a, b, err := alternate(r.runs, func() (time.Duration, error) {
		cpuOurs.start()
		d, err := ours()
		cpuOurs.stop()
		settle()
		return d, err
	}, func() (time.Duration, error) {
		cpuCLI.start()
		d, err := cli()
		cpuCLI.stop()
		settle()
		return d, err
	})
	if err != nil {
		return fmt.Errorf("throughput: %w", err)
	}
	var parts [2][]string
	for i, side := range []string{"ours", "cli"} {
		for _, st := range steps {
			parts[i] = append(parts[i], st+" "+fmtD(sampleOf(stepTimes[side+" "+st]).Median))
		}
	}
	r.t.note("[%s] task steps (medians), incusexec with %d at a time: %s; CLI one by one: %s", p.driver, r.cfg.Concurrency,
		strings.Join(parts[0], ", "), strings.Join(parts[1], ", "))
	r.t.note("[%s] during the %d tasks: incusexec: %s; CLI: %s (medians; host figures include other load)", p.driver, tasks, cpuOurs, cpuCLI)
	r.t.add(fmt.Sprintf("%d tasks (launch, push 1 MiB, run, pull, delete), concurrency %d", tasks, r.cfg.Concurrency),
		p.driver, sampleOf(a), "the same one by one through the incus CLI", sampleOf(b), 1.0/3)
	return nil
}

// warm measures (7): a claim from a full warm pool against a cold start to
// ready (Create, as measured above).
func (r *runner) warm(ctx context.Context, p poolInfo, cold Sample) error {
	size := 2
	if r.cfg.Quick {
		size = 1
	}
	pool, err := warmpool.New(warmpool.Config{
		Name: r.tag + "-" + p.driver, Manager: r.m, Client: r.c, Size: size, Refill: size,
		Interval: 250 * time.Millisecond, Logger: r.log,
		Spec: instance.Spec{Image: r.debian, Profiles: []string{p.debProfile}, Ephemeral: true, Ready: debianReady},
	})
	if err != nil {
		return err
	}
	defer pool.Close(context.WithoutCancel(ctx))
	r.progress("[%s] warm-pool claims ×%d", p.driver, r.runs)
	var ds []time.Duration
	for range r.runs {
		if err := waitFull(ctx, r.c, pool, size); err != nil {
			return err
		}
		settle()
		var in *instance.Instance
		d, err := timed(func() error {
			var err error
			in, err = pool.Claim(ctx)
			return err
		})
		if err != nil {
			return fmt.Errorf("warm pool claim: %w", err)
		}
		ds = append(ds, d)
		if err := in.Delete(ctx); err != nil {
			return err
		}
	}
	if err := pool.Close(ctx); err != nil {
		return err
	}
	r.t.add("launch from the warm pool (claim)", p.driver, sampleOf(ds), "cold start to ready (incusexec, above)", cold, 0.1)
	return nil
}

func waitFull(ctx context.Context, c incus.InstanceServer, p *warmpool.Pool, n int) error {
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		insts, err := incusop.Bind(ctx, c).GetInstancesWithFilter(api.InstanceTypeAny, []string{"config." + instance.LabelID + "=" + p.ID()})
		if err != nil {
			return err
		}
		ready := slices.DeleteFunc(insts, func(in api.Instance) bool {
			return in.Config[warmpool.LabelState] != warmpool.StateReady || in.Config[warmpool.LabelClaimed] != ""
		})
		if len(ready) >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("warm pool not full after 5 minutes")
}
