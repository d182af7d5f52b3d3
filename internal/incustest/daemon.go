package incustest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/incusexec/incusexec/internal/incusop"
	incus "github.com/lxc/incus/v6/client"
	"github.com/lxc/incus/v6/shared/api"
)

// IncusdPath is where Debian's incus-base package installs the daemon.
const IncusdPath = "/usr/libexec/incus/incusd"

// Options configures a private daemon.
type Options struct {
	// Pool is the storage driver: "btrfs", "dir" or "" to take btrfs when the
	// kernel and btrfs-progs allow it and dir otherwise. The environment
	// variable INCUSEXEC_TEST_POOL overrides "".
	Pool string
	// PoolSize is the size of a btrfs loop file; 8GiB when empty.
	PoolSize string
	// NoNetwork leaves the daemon without a bridge and the default profile
	// without a NIC.
	NoNetwork bool
	// Logger receives the harness's progress; discarded when nil.
	Logger *slog.Logger
}

// Daemon is a private incusd started for tests, with a storage pool, a bridge
// and a default profile wiring both.
type Daemon struct {
	// Dir is the daemon's INCUS_DIR.
	Dir string
	// Socket is the daemon's unix socket.
	Socket string
	// Client is connected to Socket.
	Client incus.InstanceServer
	// Pool and PoolDriver name the storage pool the default profile uses.
	Pool, PoolDriver string
	// Network is the managed bridge of the default profile ("" with NoNetwork),
	// Gateway its IPv4 address with prefix length (NAT off, IPv6 off).
	Network string
	Gateway netip.Prefix

	cmd     *exec.Cmd
	exited  chan struct{}
	log     *slog.Logger
	stopped bool
	// bridges are the managed bridges Stop found, whose firewall chains
	// checkNothingLeft looks for.
	bridges []string
}

// Start launches a private incusd with its own INCUS_DIR under the system's
// temporary directory and prepares it. The caller must call Stop.
func Start(ctx context.Context, opts Options) (d *Daemon, err error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("%w: incusd needs root (running as uid %d)", ErrUnavailable, os.Geteuid())
	}
	if _, err := os.Stat(IncusdPath); err != nil {
		return nil, fmt.Errorf("%w: %s not found (run `make deps` as root)", ErrUnavailable, IncusdPath)
	}
	becomeSubreaper()
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := sweepStale(); err != nil {
		log.Warn("stale test daemons", "err", err)
	}
	dir, err := os.MkdirTemp("", fmt.Sprintf("incustest-%d-", os.Getpid()))
	if err != nil {
		return nil, err
	}
	// incusd wants its directory traversable by unprivileged container roots.
	if err := os.Chmod(dir, 0o711); err != nil {
		return nil, err
	}
	d = &Daemon{Dir: dir, Socket: filepath.Join(dir, "unix.socket"), exited: make(chan struct{}), log: log}
	track(d)
	defer func() {
		if err != nil {
			err = errors.Join(err, d.Stop(context.WithoutCancel(ctx)))
		}
	}()

	if err := d.launch(); err != nil {
		return d, err
	}
	log.Info("incusd started", "dir", dir, "pid", d.cmd.Process.Pid)

	if err := d.waitReady(ctx, 60*time.Second); err != nil {
		return d, err
	}
	if err := d.setupPool(opts); err != nil {
		return d, err
	}
	if !opts.NoNetwork {
		if err := d.setupNetwork(ctx); err != nil {
			return d, err
		}
	}
	return d, nil
}

// launch starts incusd on d.Dir, appending to its log, and watches for its
// exit.
func (d *Daemon) launch() error {
	logFile, err := os.OpenFile(filepath.Join(d.Dir, "incusd.log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(IncusdPath, "--group", "root")
	cmd.Env = append(os.Environ(), "INCUS_DIR="+d.Dir)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", IncusdPath, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	d.cmd, d.exited = cmd, exited
	return nil
}

// ErrUnavailable says that this machine cannot run a private daemon (not
// root, Incus not installed); tests skip on it unless integration tests are
// required.
var ErrUnavailable = errors.New("incustest: Incus unavailable")

func (d *Daemon) waitReady(ctx context.Context, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var last error
	for {
		select {
		case <-d.exited:
			return fmt.Errorf("incusd exited during start-up: %s", d.logTail())
		default:
		}
		c, err := incus.ConnectIncusUnix(d.Socket, nil)
		if err == nil {
			c = incusop.Shared(c)
			var srv *api.Server
			srv, _, err = c.GetServer()
			if err == nil && srv.Environment.ServerName != "" {
				// /1.0/ready answers once the daemon finished starting.
				_, _, err = c.RawQuery("GET", "/internal/ready", nil, "")
				if err == nil {
					d.Client = c
					return nil
				}
			}
			c.Disconnect()
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("incusd not ready after %s (last error: %v): %s", limit, last, d.logTail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (d *Daemon) logTail() string {
	b, _ := os.ReadFile(filepath.Join(d.Dir, "incusd.log"))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	return strings.Join(lines, " | ")
}

// logProblems returns the lines of the daemon's log at level warning or
// error (the last 40 of them).
func (d *Daemon) logProblems() string {
	b, _ := os.ReadFile(filepath.Join(d.Dir, "incusd.log"))
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "level=error") || strings.Contains(l, "level=warning") || strings.HasPrefix(l, "Error:") {
			out = append(out, l)
		}
	}
	if len(out) > 40 {
		out = out[len(out)-40:]
	}
	if len(out) == 0 {
		return "(none)"
	}
	return strings.Join(out, "\n")
}

func (d *Daemon) setupPool(opts Options) error {
	driver := opts.Pool
	if driver == "" {
		driver = os.Getenv("INCUSEXEC_TEST_POOL")
	}
	if driver == "" {
		driver = "dir"
		if btrfsUsable() {
			driver = "btrfs"
		}
	}
	cfg := map[string]string{}
	switch driver {
	case "btrfs":
		size := opts.PoolSize
		if size == "" {
			size = "8GiB"
		}
		cfg["size"] = size
	case "dir":
	default:
		return fmt.Errorf("incustest: unsupported pool driver %q (want btrfs or dir)", driver)
	}
	d.Pool, d.PoolDriver = "test", driver
	if err := d.Client.CreateStoragePool(api.StoragePoolsPost{
		Name: d.Pool, Driver: driver, StoragePoolPut: api.StoragePoolPut{Config: cfg},
	}); err != nil {
		return fmt.Errorf("create %s storage pool: %w", driver, err)
	}
	return d.updateDefaultProfile(func(p *api.ProfilePut) {
		p.Devices["root"] = map[string]string{"type": "disk", "path": "/", "pool": d.Pool}
	})
}

// btrfsUsable reports whether a btrfs pool on a loop file can work here.
func btrfsUsable() bool {
	if _, err := exec.LookPath("mkfs.btrfs"); err != nil {
		return false
	}
	b, err := os.ReadFile("/proc/filesystems")
	if err != nil || !strings.Contains(string(b), "btrfs") {
		// The module may still be loadable.
		if exec.Command("modprobe", "btrfs").Run() != nil {
			return false
		}
	}
	_, err = os.Stat("/dev/loop-control")
	return err == nil
}

func (d *Daemon) updateDefaultProfile(edit func(*api.ProfilePut)) error {
	p, etag, err := d.Client.GetProfile("default")
	if err != nil {
		return err
	}
	put := p.Writable()
	if put.Devices == nil {
		put.Devices = map[string]map[string]string{}
	}
	edit(&put)
	return d.Client.UpdateProfile("default", put, etag)
}

func (d *Daemon) setupNetwork(ctx context.Context) error {
	name, gw, release, err := reserveBridge(ctx)
	if err != nil {
		return err
	}
	defer release()
	post := api.NetworksPost{
		Name: name, Type: "bridge",
		NetworkPut: api.NetworkPut{
			Description: "incustest bridge",
			Config: map[string]string{
				"ipv4.address": gw.String(),
				"ipv4.nat":     "false",
				"ipv6.address": "none",
			},
		},
	}
	// Like deletion, creation lists the host's links and can fail when
	// another daemon's interface disappears meanwhile: retry, after
	// removing whatever the failed attempt left.
	for attempt := 1; ; attempt++ {
		err = d.Client.CreateNetwork(post)
		if err == nil || attempt == linkRaceTries || ctx.Err() != nil {
			break
		}
		_ = d.Client.DeleteNetwork(name)
		time.Sleep(linkRacePause)
	}
	if err != nil {
		return fmt.Errorf("create bridge %s (%s): %w", name, gw, err)
	}
	d.Network, d.Gateway = name, gw
	return d.updateDefaultProfile(func(p *api.ProfilePut) {
		p.Devices["eth0"] = map[string]string{"type": "nic", "network": name, "name": "eth0"}
	})
}

// UniqueName returns prefix followed by random hex digits: names that no
// other test, package or process picks.
func UniqueName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// Stop deletes everything the daemon holds (instances, images, profiles'
// devices, networks, ACLs, storage), shuts it down, and checks that no process,
// mount, loop device or firewall chain of its own is left; then removes its
// directory.
func (d *Daemon) Stop(ctx context.Context) error {
	if d == nil || d.stopped {
		return nil
	}
	d.stopped = true
	defer untrack(d)
	var errs []error
	bridges := []string{}
	if d.Network != "" {
		bridges = append(bridges, d.Network)
	}
	if d.Client != nil {
		if nets, err := d.Client.GetNetworks(); err == nil {
			for _, n := range nets {
				if n.Managed && n.Type == "bridge" && n.Name != d.Network {
					bridges = append(bridges, n.Name)
				}
			}
		}
		errs = append(errs, d.Empty(ctx))
		if err := d.shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
		d.Client.Disconnect()
	} else if d.cmd != nil && d.cmd.Process != nil {
		_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		<-d.exited
	}
	// incusd removes a bridge's nftables chains when it deletes the
	// bridge, but only when it finds the bridge's interface up: a killed
	// daemon leaves them, and so does a deletion of a bridge that went
	// down meanwhile (one bridge's in a whole run of the tests, beside
	// other daemons' work). The host keeps them for good, so they go here.
	for _, b := range bridges {
		errs = append(errs, ClearFirewall(b))
	}
	d.bridges = bridges
	if err := d.waitNothingLeft(ctx); err != nil {
		errs = append(errs, err)
	} else if d.Dir != "" {
		if err := os.RemoveAll(d.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (d *Daemon) shutdown(ctx context.Context) error {
	if d.cmd == nil || d.cmd.Process == nil {
		return nil
	}
	// PUT /internal/shutdown is what `incus admin shutdown` calls; it stops
	// the instances and the daemon and answers once the daemon is done.
	_, _, err := d.Client.RawQuery("PUT", "/internal/shutdown?timeout=30", nil, "")
	if err != nil && !strings.Contains(err.Error(), "EOF") {
		d.log.Warn("shutdown request failed; killing incusd", "err", err)
	}
	select {
	case <-d.exited:
		return nil
	case <-time.After(60 * time.Second):
	case <-ctx.Done():
	}
	_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
	<-d.exited
	return fmt.Errorf("incusd %d did not exit after shutdown; killed", d.cmd.Process.Pid)
}

// Empty deletes every instance, image, non-default profile, network, ACL and
// storage volume, and clears the default profile's devices, leaving the
// daemon as it was before Start's set-up. Stop calls it first.
func (d *Daemon) Empty(ctx context.Context) error {
	return emptyServer(ctx, d.Client)
}

// emptyServer deletes every instance, image, non-default profile, project,
// ACL, network, custom volume and storage pool that c can see, and clears
// the default profile's devices; on a cluster it also resets members' groups
// and deletes the non-default cluster groups.
func emptyServer(ctx context.Context, c incus.InstanceServer) error {
	var errs []error
	note := func(what string, err error) {
		if err != nil && !api.StatusErrorCheck(err, 404) {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		}
	}
	wait := func(what string, op incus.Operation, err error) {
		if err == nil {
			err = op.WaitContext(ctx)
		}
		note(what, err)
	}
	projects, err := c.GetProjectNames()
	note("list projects", err)
	for _, project := range projects {
		pc := c.UseProject(project)
		insts, err := pc.GetInstances(api.InstanceTypeAny)
		note("list instances", err)
		for _, in := range insts {
			if in.StatusCode != api.Stopped {
				op, err := pc.UpdateInstanceState(in.Name, api.InstanceStatePut{Action: "stop", Force: true, Timeout: -1}, "")
				wait("stop instance "+in.Name, op, err)
			}
			op, err := pc.DeleteInstance(in.Name)
			wait("delete instance "+in.Name, op, err)
		}
		fps, err := pc.GetImageFingerprints()
		note("list images", err)
		for _, fp := range fps {
			op, err := pc.DeleteImage(fp)
			wait("delete image "+fp, op, err)
		}
		profiles, err := pc.GetProfileNames()
		note("list profiles", err)
		for _, p := range profiles {
			if p != "default" {
				note("delete profile "+p, pc.DeleteProfile(p))
			}
		}
		acls, err := pc.GetNetworkACLNames()
		note("list ACLs", err)
		for _, a := range acls {
			note("delete ACL "+a, pc.DeleteNetworkACL(a))
		}
	}
	note("clear default profile", (&Daemon{Client: c}).updateDefaultProfile(func(p *api.ProfilePut) {
		p.Devices = map[string]map[string]string{}
	}))
	for _, project := range projects {
		if project != "default" {
			note("delete project "+project, c.DeleteProject(project))
		}
	}
	if c.IsClustered() {
		note("reset cluster groups", resetClusterGroups(c))
	}
	nets, err := c.GetNetworks()
	note("list networks", err)
	for _, n := range nets {
		if n.Managed {
			note("delete network "+n.Name, deleteNetwork(ctx, c, n.Name))
		}
	}
	pools, err := c.GetStoragePoolNames()
	note("list pools", err)
	for _, p := range pools {
		vols, err := c.GetStoragePoolVolumes(p)
		note("list volumes", err)
		for _, v := range vols {
			if v.Type == "custom" {
				vc := c
				if c.IsClustered() && v.Location != "" {
					vc = c.UseTarget(v.Location)
				}
				note("delete volume "+v.Name, vc.DeleteStoragePoolVolume(p, v.Type, v.Name))
			}
		}
		note("delete pool "+p, c.DeleteStoragePool(p))
	}
	return errors.Join(errs...)
}

// deleteNetwork retries: incusd lists every link on the host when deleting a
// bridge, and fails when another daemon's interface disappears meanwhile
// (seen with tests running in parallel).
func deleteNetwork(ctx context.Context, c incus.InstanceServer, name string) error {
	var err error
	for range linkRaceTries {
		if err = c.DeleteNetwork(name); err == nil || api.StatusErrorCheck(err, 404) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(linkRacePause):
		}
	}
	return err
}

// linkRaceTries and linkRacePause bound the retries of a bridge creation or
// deletion that incusd fails because a link elsewhere on the host vanished
// while it listed them: about 30 s, which outlasts the churn of two test
// packages launching and deleting containers side by side on a loaded host
// (six tries 300 ms apart were seen to fail in a row, and 10 s of tries
// while another package launched and deleted fifty containers).
const (
	linkRaceTries = 60
	linkRacePause = 500 * time.Millisecond
)

// waitNothingLeft reaps what the daemon left and gives processes that are
// already exiting (dnsmasq, LXC monitors on a loaded machine) a few seconds
// before reporting them as leaked.
func (d *Daemon) waitNothingLeft(ctx context.Context) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		reapZombies()
		err := d.checkNothingLeft()
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkNothingLeft finds processes, mounts and loop devices that still refer
// to the daemon's directory or bridge, and its bridges' firewall chains.
func (d *Daemon) checkNothingLeft() error {
	var left []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.ReplaceAll(string(b), "\x00", " ")
		if refersTo(filepath.Dir(p), d.Dir) || (d.Network != "" && strings.Contains(args, "--interface="+d.Network+" ")) {
			left = append(left, fmt.Sprintf("process %s: %s", filepath.Base(filepath.Dir(p)), args))
		}
	}
	if f, err := os.Open("/proc/self/mountinfo"); err == nil {
		s := bufio.NewScanner(f)
		for s.Scan() {
			fields := strings.Fields(s.Text())
			if len(fields) > 4 && strings.HasPrefix(fields[4], d.Dir) {
				left = append(left, "mount "+fields[4])
			}
		}
		f.Close()
	}
	backing, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, p := range backing {
		b, _ := os.ReadFile(p)
		if strings.HasPrefix(strings.TrimSpace(string(b)), d.Dir) {
			left = append(left, "loop device "+strings.Split(p, "/")[3]+" on "+strings.TrimSpace(string(b)))
		}
	}
	if d.Network != "" {
		if _, err := net.InterfaceByName(d.Network); err == nil {
			left = append(left, "network interface "+d.Network)
		}
	}
	for _, b := range d.bridges {
		chains, err := FirewallChains(b)
		if err != nil {
			left = append(left, "nftables chains of "+b+" unknown: "+err.Error())
		}
		for _, c := range chains {
			left = append(left, "nftables chain "+c)
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("incustest: daemon in %s left behind: %s", d.Dir, strings.Join(left, "; "))
	}
	return nil
}

// becomeSubreaper makes this process the reaper of incusd's orphaned
// children: without it they would become zombies of a PID 1 that may not
// reap them (as in some sandboxes).
func becomeSubreaper() {
	const prSetChildSubreaper = 36
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0)
}

// reapZombies collects zombie children left by incusd, dnsmasq and LXC.
// Only those are reaped, so that os/exec commands running elsewhere in the
// test binary keep their exit statuses.
func reapZombies() {
	me := strconv.Itoa(os.Getpid())
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := string(b)
		open, closeIdx := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || closeIdx < 0 {
			continue
		}
		comm := s[open+1 : closeIdx]
		rest := strings.Fields(s[closeIdx+1:])
		if len(rest) < 2 || rest[0] != "Z" || rest[1] != me {
			continue
		}
		if !strings.HasPrefix(comm, "incusd") && !strings.HasPrefix(comm, "dnsmasq") && !strings.HasPrefix(comm, "lxc") && !strings.Contains(comm, "fork") {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		var ws syscall.WaitStatus
		_, _ = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
	}
}
