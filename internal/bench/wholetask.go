package bench

import (
	"bufio"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/lxc/incus/v6/shared/api"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/imagebuild"
	"github.com/incusexec/incusexec/imagebuild/imagetest"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/instance/warmpool"
	"github.com/incusexec/incusexec/internal/incusop"
	"github.com/incusexec/incusexec/internal/incustest"
)

// debusineDriver runs Debusine's own executor code, one task per line.
//
//go:embed debusine_task.py
var debusineDriver []byte

// DebusinePython is the interpreter python3-debusine is installed for.
const DebusinePython = "/usr/bin/python3"

// WholeTaskConfig says what the whole-task measurement runs on.
type WholeTaskConfig struct {
	// Tarball is the uncompressed Debian system tarball with systemd
	// (the cached debootstrapped one of the host's suite when empty).
	Tarball string
	// Drivers are the storage drivers to measure on, each in a private
	// daemon of its own (btrfs and dir when empty).
	Drivers []string
	// Runs per side (5 when zero).
	Runs int
	// Progress, when set, receives one line per step.
	Progress io.Writer
	// Logger receives what the library does; discarded when nil.
	Logger *slog.Logger
}

// The profile name is Debusine's: IncusInstance.do_start launches with
// "--profile debusine". Both sides use it and nothing else.
const (
	debusineProfile = "debusine"
	taskArtifactID  = "bench-task"
	taskUser        = "_debusine" // Debusine's non_root_user
)

// WholeTask measures one task end to end -- launch an ephemeral instance
// from artifact/<ID>, wait until it is ready, run `true` as the
// non-root user (created on first use), tear it down -- with incusexec
// (cold, the caller waiting for the deletion or handing it to a Reaper;
// and claimed from a warm pool) against Debusine 0.11.3's IncusInstance
// (do_start, do_run(["true"]), do_stop) driven in a Python child of this
// process, on the same private daemon, image and profile, alternating.
func WholeTask(ctx context.Context, cfg WholeTaskConfig) (*Table, error) {
	if _, err := exec.LookPath("incus"); err != nil {
		return nil, fmt.Errorf("bench: Debusine drives the incus command: %w", err)
	}
	if out, err := exec.CommandContext(ctx, DebusinePython, "-c", "import debusine.tasks.executors.incus").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("bench: Debusine's executor code is not installed (run internal/bench/debusine-deps.sh as root): %v: %s", err, strings.TrimSpace(string(out)))
	}
	if cfg.Tarball == "" {
		var err error
		if cfg.Tarball, err = (imagetest.Debian{Suite: imagetest.HostSuite()}).Tarball(); err != nil {
			return nil, fmt.Errorf("bench: Debian tarball: %w", err)
		}
	}
	if len(cfg.Drivers) == 0 {
		cfg.Drivers = []string{"btrfs", "dir"}
	}
	if cfg.Runs <= 0 {
		cfg.Runs = 5
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	dir, err := os.MkdirTemp("", "incusexec-wholetask-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	script := filepath.Join(dir, "debusine_task.py")
	if err := os.WriteFile(script, debusineDriver, 0o755); err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	machine := fmt.Sprintf("%s, %d CPUs, %s/%s, load at start %s", host, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, loadAvg())
	if out, err := exec.CommandContext(ctx, incustest.IncusdPath, "--version").Output(); err == nil {
		machine += ", incusd " + strings.TrimSpace(string(out))
	}
	t := &Table{Date: time.Now(), Machine: machine}
	for _, drv := range cfg.Drivers {
		if err := wholeTaskOn(ctx, cfg, drv, script, t); err != nil {
			return t, fmt.Errorf("bench: whole task on %s: %w", drv, err)
		}
	}
	t.note("load at the end: %s", loadAvg())
	return t, nil
}

// taskSide is one way of running the task; it returns the time the
// caller waited and the time spent afterwards (a reaper's deletion).
type taskSide struct {
	name string
	run  func() (waited, after time.Duration, err error)
	got  []time.Duration
	bg   []time.Duration
}

func wholeTaskOn(ctx context.Context, cfg WholeTaskConfig, drv, script string, t *Table) (err error) {
	progress := func(format string, args ...any) {
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "bench: ["+drv+"] "+format+"\n", args...)
		}
	}
	progress("start a private incusd")
	d, err := incustest.Start(ctx, incustest.Options{Pool: drv, Logger: cfg.Logger})
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
		defer cancel()
		err = errors.Join(err, d.Stop(sctx))
	}()
	progress("import %s as %s", filepath.Base(cfg.Tarball), "artifact/"+taskArtifactID)
	im := &imagebuild.Importer{Client: d.Client, Logger: cfg.Logger}
	img, err := im.Import(ctx, imagebuild.Source{ID: taskArtifactID, Path: cfg.Tarball,
		Metadata: imagebuild.Metadata{Description: "Debian " + imagetest.HostSuite() + " minbase with systemd (bench)",
			OS: "debian", Release: imagetest.HostSuite()}}, imagebuild.Options{Owner: "incusexec-bench"})
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	if err := incusop.Bind(ctx, d.Client).CreateProfile(api.ProfilesPost{Name: debusineProfile, ProfilePut: api.ProfilePut{
		Description: "Debusine's profile: root disk and NIC host0 on a NAT-less bridge",
		Devices: map[string]map[string]string{
			"root": {"type": "disk", "path": "/", "pool": d.Pool},
			"eth0": {"type": "nic", "network": d.Network, "name": "host0"},
		}}}); err != nil {
		return fmt.Errorf("create profile: %w", err)
	}

	m, err := instance.New(d.Client, instance.Config{Owner: "incusexec-bench", Logger: cfg.Logger})
	if err != nil {
		return err
	}
	defer m.Close()
	reaper := m.NewReaper(instance.ReaperConfig{})
	defer reaper.Close(context.WithoutCancel(ctx))
	spec := instance.Spec{Image: img.Alias, Profiles: []string{debusineProfile}, Ephemeral: true,
		Ready: instance.Ready{Systemd: true, NIC: "host0", Family: "inet", Timeout: 3 * time.Minute}}
	pool, err := warmpool.New(warmpool.Config{Name: "bench", Manager: m, Client: d.Client, Size: 1, Manual: true,
		Spec: spec, Logger: cfg.Logger})
	if err != nil {
		return err
	}
	defer pool.Close(context.WithoutCancel(ctx))

	py := exec.CommandContext(ctx, DebusinePython, script, img.Alias)
	py.Env = append(os.Environ(), "INCUS_SOCKET="+d.Socket, "INCUS_DIR="+d.Dir)
	py.Stderr = cfg.Progress
	if cfg.Progress == nil {
		py.Stderr = io.Discard
	}
	// Commands go down file descriptor 3: standard input is /dev/null,
	// because `incus launch` reads it when it is not a terminal.
	cmdR, pyIn, err := os.Pipe()
	if err != nil {
		return err
	}
	py.ExtraFiles = []*os.File{cmdR}
	pyOut, err := py.StdoutPipe()
	if err != nil {
		return err
	}
	err = py.Start()
	cmdR.Close()
	if err != nil {
		pyIn.Close()
		return fmt.Errorf("start the Debusine driver: %w", err)
	}
	defer func() {
		pyIn.Close()
		_ = py.Wait()
	}()
	lines := bufio.NewScanner(pyOut)

	// allGone waits (untimed) until the daemon has no instance left, so
	// that no side pays for the previous one's background work.
	allGone := func() error {
		for range 1200 {
			insts, err := d.Client.GetInstanceNames(api.InstanceTypeAny)
			if err != nil {
				return err
			}
			if len(insts) == 0 {
				time.Sleep(time.Second)
				return nil
			}
			time.Sleep(50 * time.Millisecond)
		}
		return errors.New("instances left after 60 s")
	}

	var dStart, dRun, dStop, oReady, oExec []time.Duration
	task := func(in *instance.Instance) error {
		t0 := time.Now()
		code, err := in.Exec(ctx, executor.Cmd{Args: []string{"true"}, User: taskUser})
		oExec = append(oExec, time.Since(t0))
		if err == nil && code != 0 {
			err = fmt.Errorf("true exited %d", code)
		}
		return err
	}
	sides := []*taskSide{
		{name: "debusine", run: func() (time.Duration, time.Duration, error) {
			if _, err := io.WriteString(pyIn, "task\n"); err != nil {
				return 0, 0, err
			}
			if !lines.Scan() {
				return 0, 0, fmt.Errorf("Debusine driver ended: %v", lines.Err())
			}
			f := strings.Fields(lines.Text())
			if len(f) != 4 {
				return 0, 0, fmt.Errorf("Debusine driver: %q", lines.Text())
			}
			var ds [4]time.Duration
			for i, s := range f {
				v, err := strconv.ParseFloat(s, 64)
				if err != nil {
					return 0, 0, fmt.Errorf("Debusine driver: %q", lines.Text())
				}
				ds[i] = time.Duration(v * float64(time.Second))
			}
			dStart, dRun, dStop = append(dStart, ds[1]), append(dRun, ds[2]), append(dStop, ds[3])
			return ds[0], 0, nil
		}},
		{name: "cold", run: func() (time.Duration, time.Duration, error) {
			t0 := time.Now()
			in, err := m.Create(ctx, spec)
			if err != nil {
				return 0, 0, err
			}
			oReady = append(oReady, time.Since(t0))
			if err := task(in); err != nil {
				return 0, 0, errors.Join(err, in.Delete(ctx))
			}
			err = in.Delete(ctx)
			return time.Since(t0), 0, err
		}},
		{name: "cold-reaper", run: func() (time.Duration, time.Duration, error) {
			t0 := time.Now()
			in, err := m.Create(ctx, spec)
			if err != nil {
				return 0, 0, err
			}
			if err := task(in); err != nil {
				return 0, 0, errors.Join(err, in.Delete(ctx))
			}
			if err := reaper.Reap(in); err != nil {
				return 0, 0, err
			}
			waited := time.Since(t0)
			t1 := time.Now()
			err = reaper.Drain(ctx)
			return waited, time.Since(t1), err
		}},
		{name: "warm", run: func() (time.Duration, time.Duration, error) {
			// Filling is the pool's background work, untimed; the claim
			// comes once the machine is quiet again.
			if err := pool.Fill(ctx); err != nil {
				return 0, 0, err
			}
			time.Sleep(time.Second)
			t0 := time.Now()
			in, err := pool.Claim(ctx)
			if err != nil {
				return 0, 0, err
			}
			if err := task(in); err != nil {
				return 0, 0, errors.Join(err, in.Delete(ctx))
			}
			if err := reaper.Reap(in); err != nil {
				return 0, 0, err
			}
			waited := time.Since(t0)
			t1 := time.Now()
			err = reaper.Drain(ctx)
			return waited, time.Since(t1), err
		}},
	}

	progress("warm-up: one task each side, untimed")
	for _, s := range sides {
		if _, _, err := s.run(); err != nil {
			return fmt.Errorf("warm-up %s: %w", s.name, err)
		}
		if err := allGone(); err != nil {
			return err
		}
	}
	dStart, dRun, dStop, oReady, oExec = nil, nil, nil, nil, nil
	bootNote(ctx, m, spec, drv, t)
	if err := allGone(); err != nil {
		return err
	}
	for i := range cfg.Runs {
		progress("round %d/%d (load %s)", i+1, cfg.Runs, loadAvg())
		for j := range sides {
			s := sides[(i+j)%len(sides)]
			waited, after, err := s.run()
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			s.got, s.bg = append(s.got, waited), append(s.bg, after)
			progress("  %-11s %s", s.name, fmtD(waited))
			if err := allGone(); err != nil {
				return err
			}
		}
	}
	ref := sampleOf(sides[0].got)
	const refName = "Debusine 0.11.3 IncusInstance do_start+do_run+do_stop"
	t.add("whole task, cold, caller waits for the deletion", drv, sampleOf(sides[1].got), refName, ref, 0.5)
	t.add("whole task, cold, deletion handed to a Reaper", drv, sampleOf(sides[2].got), refName, ref, 0.5)
	t.add("whole task from the warm pool (claim, run, Reaper)", drv, sampleOf(sides[3].got), refName, ref, 0.25)
	t.note("[%s] Debusine steps (medians): do_start (launch + is-system-running every 0.2 s) %s, do_run(['true']) (getent, useradd, getent, exec) %s, do_stop (graceful stop) %s",
		drv, fmtD(sampleOf(dStart).Median), fmtD(sampleOf(dRun).Median), fmtD(sampleOf(dStop).Median))
	t.note("[%s] incusexec steps (medians): create+start+ready %s, exec true as %s (created on first use) %s; the Reaper's deletion afterwards %s (cold) / %s (warm), off the caller's path",
		drv, fmtD(sampleOf(oReady).Median), taskUser, fmtD(sampleOf(oExec).Median), fmtD(sampleOf(sides[2].bg).Median), fmtD(sampleOf(sides[3].bg).Median))
	return nil
}

// bootNote records where the boot of one instance went, as systemd saw it.
func bootNote(ctx context.Context, m *instance.Manager, spec instance.Spec, drv string, t *Table) {
	in, err := m.Create(ctx, spec)
	if err != nil {
		return
	}
	defer in.Delete(context.WithoutCancel(ctx))
	var out strings.Builder
	if _, err := in.Exec(ctx, executor.Cmd{Args: []string{"systemd-analyze", "time"}, Stdout: &out}); err != nil {
		return
	}
	first, _, _ := strings.Cut(strings.TrimSpace(out.String()), "\n")
	out.Reset()
	if _, err := in.Exec(ctx, executor.Cmd{Args: []string{"systemd-analyze", "blame", "--no-pager"}, Stdout: &out}); err != nil {
		return
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	for i := range lines {
		lines[i] = strings.Join(strings.Fields(lines[i]), " ")
	}
	t.note("[%s] systemd in the instance: %s; slowest units: %s", drv, first, strings.Join(lines[:min(5, len(lines))], ", "))
}

// loadAvg is the first three fields of /proc/loadavg: the bench shares the
// machine, and its figures mean little under load.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}
