package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	incusclient "github.com/lxc/incus/v6/client"

	"github.com/incusexec/incusexec/executor/incus"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/imagebuild"
	"github.com/incusexec/incusexec/internal/bench"
	"github.com/incusexec/incusexec/mount"
	"github.com/incusexec/incusexec/netbridge"
)

// plainConfig is the configuration without the bridge and profile, for
// commands that must not change them.
func (a *app) plainConfig() (incus.Config, error) {
	cfg, _, err := a.executorConfig()
	cfg.Network, cfg.Profile = nil, nil
	return cfg, err
}

// backend is the connect preamble of the commands that work on what exists:
// the backend of plainConfig, changed by edit first when edit is not nil.
// The caller closes it. (setup and create, which make sure of the bridge
// and profile, connect with the whole configuration.)
func (a *app) backend(ctx context.Context, edit func(*incus.Config)) (*incus.Backend, incus.Config, error) {
	cfg, err := a.plainConfig()
	if err != nil {
		return nil, cfg, err
	}
	if edit != nil {
		edit(&cfg)
	}
	b, err := incus.NewBackend(ctx, cfg)
	return b, cfg, err
}

// client is the connection alone, for commands that need no backend (no
// event listener, mount or bridge manager): images, virt-server.
func (a *app) client(ctx context.Context) (incusclient.InstanceServer, incus.Config, error) {
	cfg, err := a.plainConfig()
	if err != nil {
		return nil, cfg, err
	}
	c, err := incus.Connect(ctx, cfg)
	return c, cfg, err
}

// instance returns a handle on the existing instance name, and the backend
// it belongs to (the caller closes it).
func (a *app) instance(ctx context.Context, name string, edit func(*incus.Config)) (*incus.Backend, *incus.Instance, error) {
	if err := executor.CheckName(name); err != nil {
		return nil, nil, err
	}
	b, _, err := a.backend(ctx, edit)
	if err != nil {
		return nil, nil, err
	}
	in, err := b.Instance(ctx, name)
	if err != nil {
		b.Close()
		return nil, nil, err
	}
	return b, in, nil
}

func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// cleanupCtx is for undoing work after ctx was cancelled.
func cleanupCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
}

// ---- setup ----

func cmdSetup(ctx context.Context, a *app, args []string) error {
	fs := a.flagSet("setup")
	network := fs.String("network", "", "bridge `name` (default: from --config, else incusexec-br)")
	profile := fs.String("profile", "", "profile `name` (default: from --config, else incusexec)")
	subnet := fs.String("subnet", "", "bridge IPv4 `gateway/len`, e.g. 10.42.0.1/24 (default: a free /24)")
	nic := fs.String("nic-name", "", "NIC `name` inside instances (default eth0; host0 for Debian images)")
	pool := fs.String("pool", "", "storage `pool` of the root disk, created when missing: btrfs on a loop file where the daemon can, else dir (default: the profile's, else default, else the first pool, else incusexec)")
	nat := fs.Bool("nat", false, "masquerade the instances' traffic (off unless asked for)")
	pos, _, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErr("unexpected arguments %q", pos)
	}
	cfg, _, err := a.executorConfig()
	if err != nil {
		return err
	}
	ns := netbridge.NetworkSpec{Prefix: "incusexec"}
	if cfg.Network != nil {
		ns = *cfg.Network
	}
	if *network != "" {
		ns.Name = *network
	}
	if *subnet != "" {
		p, err := netip.ParsePrefix(*subnet)
		if err != nil {
			return usageErr("--subnet: %v", err)
		}
		ns.IPv4 = p
	}
	if flagSet(fs, "nat") {
		ns.NAT = *nat
	}
	ps := netbridge.ProfileSpec{Name: "incusexec"}
	if cfg.Profile != nil {
		ps = *cfg.Profile
	}
	if *profile != "" {
		ps.Name = *profile
	}
	if *nic != "" {
		ps.NICName = *nic
	}
	if *pool != "" {
		ps.Pool = *pool
	}
	res, err := setup(ctx, a, cfg, ns, ps)
	if err != nil {
		return err
	}
	defer res.backend.Close()
	if a.g.json {
		return a.printJSON(res.report())
	}
	for _, line := range res.lines() {
		fmt.Fprintln(a.stdout, line)
	}
	return nil
}

// setupResult is what setup made sure of.
type setupResult struct {
	backend     *incus.Backend
	pool        string
	poolCreated bool
	poolChoice  incus.PoolChoice
	nat         bool
}

func (r *setupResult) changes() []netbridge.Change {
	var ch []netbridge.Change
	if n := r.backend.Network(); n != nil {
		ch = append(ch, n.Changes...)
	}
	if p := r.backend.Profile(); p != nil {
		ch = append(ch, p.Changes...)
	}
	return ch
}

func (r *setupResult) lines() []string {
	var out []string
	if r.poolCreated {
		out = append(out, fmt.Sprintf("storage-pool %s created (driver %s: %s)", r.pool, r.poolChoice.Driver, r.poolChoice.Why))
	}
	for _, c := range r.changes() {
		out = append(out, c.String())
	}
	if len(out) == 0 {
		out = append(out, "nothing to change")
	}
	n, p := r.backend.Network(), r.backend.Profile()
	nat := "off"
	if r.nat {
		nat = "on"
	}
	out = append(out, fmt.Sprintf("bridge %s %s (NAT %s), profile %s (root disk on %s)", n.Name, n.IPv4, nat, p.Name, r.pool))
	return out
}

func (r *setupResult) report() any {
	type change struct {
		Kind, Name, Action string
		Keys               []string `json:",omitempty"`
	}
	var ch []change
	for _, c := range r.changes() {
		ch = append(ch, change{c.Kind, c.Name, string(c.Action), c.Keys})
	}
	n, p := r.backend.Network(), r.backend.Profile()
	return map[string]any{
		"pool": r.pool, "pool_created": r.poolCreated, "pool_driver": r.poolChoice.Driver, "pool_why": r.poolChoice.Why,
		"network": n.Name, "ipv4": n.IPv4.String(), "profile": p.Name,
		"changes": ch,
	}
}

// setup makes sure of a storage pool, then of the bridge and the profile,
// and returns the backend that ensured them.
func setup(ctx context.Context, a *app, cfg incus.Config, ns netbridge.NetworkSpec, ps netbridge.ProfileSpec) (*setupResult, error) {
	plain := cfg
	plain.Network, plain.Profile = nil, nil
	c, err := incus.Connect(ctx, plain)
	if err != nil {
		return nil, err
	}
	choice, err := incus.EnsurePoolChoice(ctx, c, incus.PoolSpec{Name: ps.Pool, Owner: cfg.Owner, Logger: a.log})
	if err != nil {
		return nil, err
	}
	pool, created := choice.Name, choice.Created
	ps.Pool = pool
	cfg.Client = c
	cfg.Network, cfg.Profile = &ns, &ps
	b, err := incus.NewBackend(ctx, cfg)
	if err != nil {
		if created {
			cctx, cancel := cleanupCtx(ctx)
			defer cancel()
			_ = incus.RemovePool(cctx, c, pool, cfg.Owner)
		}
		return nil, err
	}
	return &setupResult{backend: b, pool: pool, poolCreated: created, poolChoice: choice, nat: ns.NAT}, nil
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// ---- image ----

func cmdImage(ctx context.Context, a *app, args []string) error {
	if len(args) == 0 {
		return usageErr("want image import TARBALL --alias A, or image rm ALIAS")
	}
	switch args[0] {
	case "import":
		return cmdImageImport(ctx, a, args[1:])
	case "rm", "remove", "delete":
		return cmdImageRm(ctx, a, args[1:])
	}
	return usageErr("unknown image command %q: want import or rm", args[0])
}

func cmdImageImport(ctx context.Context, a *app, args []string) error {
	fs := a.flagSet("image import")
	alias := fs.String("alias", "", "artifact/`ID` (or just ID): the image's alias (required)")
	vm := fs.Bool("vm", false, "the input is a VM disk (qcow2 or raw)")
	mode := fs.String("mode", "split", "`split` (stream the tarball unchanged) or unified (one re-rooted tarball)")
	comp := fs.String("compression", "", "compression of a unified image: none, gzip or zstd")
	arch := fs.String("arch", "", "architecture, Debian or Incus name (default: the host's)")
	osName := fs.String("os", "", "os property (e.g. debian)")
	release := fs.String("release", "", "release property (e.g. bookworm)")
	desc := fs.String("description", "", "description property")
	var profiles multi
	fs.Var(&profiles, "profile", "`profile` instances of the image get when created without profiles; set on the image record, must exist (repeatable)")
	replace := fs.Bool("replace", false, "import even when the alias exists, and move it to the new image")
	pos, _, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *alias == "" {
		return usageErr("want image import TARBALL --alias A")
	}
	id, _ := strings.CutPrefix(*alias, imagebuild.AliasPrefix)
	c, cfg, err := a.client(ctx)
	if err != nil {
		return err
	}
	opts := imagebuild.Options{Mode: imagebuild.Mode(*mode), Compression: imagebuild.Compression(*comp), Replace: *replace, Owner: cfg.Owner}
	if *vm {
		opts.Type = imagebuild.VirtualMachine
	}
	bar := a.progressBar("importing " + filepath.Base(pos[0]))
	opts.Progress = bar.update
	im := &imagebuild.Importer{Client: c, Logger: a.log}
	img, err := im.Import(ctx, imagebuild.Source{ID: id, Path: pos[0], Metadata: imagebuild.Metadata{
		Architecture: *arch, OS: *osName, Release: *release, Description: *desc, Profiles: profiles,
	}}, opts)
	bar.done(err == nil)
	if err != nil {
		return err
	}
	if a.g.json {
		return a.printJSON(map[string]any{"alias": img.Alias, "fingerprint": img.Fingerprint, "reused": img.Reused})
	}
	note := ""
	if img.Reused {
		note = " (already imported; --replace to import again)"
	}
	fmt.Fprintf(a.stdout, "%s %s%s\n", img.Fingerprint, img.Alias, note)
	return nil
}

func cmdImageRm(ctx context.Context, a *app, args []string) error {
	fs := a.flagSet("image rm")
	pos, _, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErr("want image rm ALIAS")
	}
	c, _, err := a.client(ctx)
	if err != nil {
		return err
	}
	im := &imagebuild.Importer{Client: c, Logger: a.log}
	err = im.Delete(ctx, pos[0])
	if errors.Is(err, imagebuild.ErrInUse) {
		fmt.Fprintf(a.stdout, "alias %s removed; the image stays while instances use it\n", pos[0])
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "image %s removed\n", pos[0])
	return nil
}

// progress draws a progress bar on a terminal, and nothing elsewhere.
type progress struct {
	w     io.Writer
	label string
	last  time.Time
	shown bool
}

func (a *app) progressBar(label string) *progress {
	f, ok := a.stderr.(*os.File)
	if !ok {
		return &progress{}
	}
	if st, err := f.Stat(); err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return &progress{}
	}
	return &progress{w: f, label: label}
}

func (p *progress) update(read, total int64) {
	if p.w == nil || time.Since(p.last) < 100*time.Millisecond {
		return
	}
	p.last, p.shown = time.Now(), true
	const width = 30
	if total <= 0 {
		fmt.Fprintf(p.w, "\r%s %8.1f MB", p.label, float64(read)/1e6)
		return
	}
	n := int(width * read / total)
	fmt.Fprintf(p.w, "\r%s [%s%s] %3d%% %.1f/%.1f MB", p.label, strings.Repeat("=", n), strings.Repeat(" ", width-n),
		100*read/total, float64(read)/1e6, float64(total)/1e6)
}

func (p *progress) done(ok bool) {
	if p.w != nil && p.shown {
		fmt.Fprintln(p.w)
	}
}

// ---- run, launch ----

// instanceFlags are the flags of commands that create an instance.
type instanceFlags struct {
	image     *string
	vm        *bool
	profiles  multi
	ready     *string
	readyNIC  *string
	ephemeral bool
}

func (f *instanceFlags) register(fs *flag.FlagSet) {
	f.image = fs.String("image", "", "image `alias` or fingerprint (required)")
	f.vm = fs.Bool("vm", false, "make a virtual machine")
	fs.Var(&f.profiles, "profile", "extra `profile` (repeatable), after the configured ones")
	f.ready = fs.String("ready", "", "what Start waits for: systemd, network (an IPv4 address on the NIC) or none (default: from --config, else none)")
	f.readyNIC = fs.String("nic-name", "", "NIC `name` --ready network waits on (default eth0, or the config's)")
}

// create makes and starts an instance as the flags say; on failure (or
// cancellation) it leaves none behind.
func (f *instanceFlags) create(ctx context.Context, a *app, id string, name string) (*incus.Backend, executor.Instance, error) {
	if *f.image == "" {
		return nil, nil, usageErr("--image is required")
	}
	cfg, fc, err := a.executorConfig()
	if err != nil {
		return nil, nil, err
	}
	if *f.ready != "" || *f.readyNIC != "" {
		nic := *f.readyNIC
		if nic == "" {
			nic = fc.NICName
		}
		ready := *f.ready
		if ready == "" {
			ready = fc.Ready
		}
		if cfg.Ready, err = parseReady(ready, nic); err != nil {
			return nil, nil, usageErr("--ready: %v", err)
		}
	}
	b, err := incus.NewBackend(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	ex, err := b.Executor(incus.Image{Alias: *f.image, VM: *f.vm})
	if err != nil {
		b.Close()
		return nil, nil, err
	}
	in, err := ex.Create(ctx, executor.Spec{Name: name, ID: id, Ephemeral: f.ephemeral, Profiles: f.profiles})
	if err != nil {
		b.Close()
		return nil, nil, err
	}
	a.log.Info("created", "instance", in.Name())
	if err := in.Start(ctx); err != nil {
		cctx, cancel := cleanupCtx(ctx)
		defer cancel()
		if derr := in.Delete(cctx); derr != nil {
			err = errors.Join(err, derr)
		}
		b.Close()
		return nil, nil, err
	}
	return b, in, nil
}

// execFlags are the flags of commands that run a command.
type execFlags struct {
	user    *string
	env     multi
	cwd     *string
	timeout *time.Duration
	stream  *bool
}

func (f *execFlags) register(fs *flag.FlagSet) {
	f.user = fs.String("user", "", "run as this `user` (created when missing; a name or a numeric uid)")
	fs.Var(&f.env, "env", "`K=V` environment variable (repeatable)")
	f.cwd = fs.String("cwd", "", "working `directory` (default: the user's home)")
	f.timeout = fs.Duration("timeout", 0, "kill the command after this `duration` (exit 124)")
	f.stream = fs.Bool("stream", false, "output over websockets as written (interactive use); can lose output on a loaded host")
}

// prepareUser creates a named user; it returns its ids (zero for root or a
// numeric user).
func (f *execFlags) prepareUser(ctx context.Context, in executor.Instance) (executor.User, error) {
	u := *f.user
	if u == "" || u == "root" {
		return executor.User{Name: "root", Home: "/root"}, nil
	}
	if _, err := strconv.Atoi(u); err == nil {
		return executor.User{}, nil
	}
	return in.EnsureUser(ctx, u)
}

// exec runs cmd with the flags and the app's streams; a non-zero exit
// becomes an exitError carrying the code.
func (f *execFlags) exec(ctx context.Context, a *app, in executor.Instance, argv []string) error {
	if len(argv) == 0 {
		return usageErr("no command given (put it after --)")
	}
	env, err := f.environment()
	if err != nil {
		return err
	}
	code, err := in.Exec(ctx, executor.Cmd{
		Args: argv, Env: env, Dir: *f.cwd, User: *f.user,
		Stdin: a.inputStream(), Stdout: a.stdout, Stderr: a.stderr, Timeout: *f.timeout, Stream: *f.stream,
	})
	switch {
	case errors.Is(err, executor.ErrTimeout):
		return &exitError{code: exitTimeout, msg: fmt.Sprintf("%s: %v", in.Name(), err)}
	case err != nil:
		return err
	case code != 0:
		return &exitError{code: code}
	}
	return nil
}

// environment parses the --env flags.
func (f *execFlags) environment() (map[string]string, error) {
	env := map[string]string{}
	for _, kv := range f.env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usageErr("--env %q: want K=V", kv)
		}
		env[k] = v
	}
	return env, nil
}

// inputStream is stdin when it is a pipe or a file: a terminal is not
// forwarded (there is no interactive mode).
func (a *app) inputStream() io.Reader {
	f, ok := a.stdin.(*os.File)
	if !ok {
		return a.stdin
	}
	if st, err := f.Stat(); err != nil || st.Mode()&os.ModeCharDevice != 0 {
		return nil
	}
	return f
}

type copySpec struct{ src, dst string }

func parseCopies(flagName string, vals []string) ([]copySpec, error) {
	var out []copySpec
	for _, v := range vals {
		i := strings.LastIndex(v, ":")
		if i <= 0 || i == len(v)-1 {
			return nil, usageErr("--%s %q: want SRC:DST", flagName, v)
		}
		out = append(out, copySpec{v[:i], v[i+1:]})
	}
	return out, nil
}

type mountSpec struct {
	alias, src string
	ro         bool
}

func parseMounts(vals []string) ([]mountSpec, error) {
	var out []mountSpec
	for _, v := range vals {
		alias, src, ok := strings.Cut(v, "=")
		if !ok || alias == "" || src == "" {
			return nil, usageErr("--mount %q: want ALIAS=SRC[:ro]", v)
		}
		m := mountSpec{alias: alias, src: src}
		if s, ok := strings.CutSuffix(src, ":ro"); ok {
			m.src, m.ro = s, true
		}
		out = append(out, m)
	}
	return out, nil
}

func cmdRun(ctx context.Context, a *app, args []string) error {
	fs := a.flagSet("run")
	var inf instanceFlags
	inf.register(fs)
	var exf execFlags
	exf.register(fs)
	var mounts, pushes, pulls multi
	fs.Var(&mounts, "mount", "`ALIAS=SRC[:ro]`: mount the host directory SRC at /data/<hash of ALIAS> (repeatable)")
	fs.Var(&pushes, "push", "`SRC:DST`: copy a host file or directory in before the command (repeatable)")
	fs.Var(&pulls, "pull", "`SRC:DST`: copy a file or directory out after the command (repeatable)")
	keep := fs.Bool("keep", false, "leave the instance (persistent, running) and print its name")
	pos, argv, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(argv) == 0 {
		argv, pos = pos, nil
	}
	if len(pos) > 0 {
		return usageErr("unexpected arguments %q before --", pos)
	}
	if len(argv) == 0 {
		return usageErr("no command given (put it after --)")
	}
	ms, err := parseMounts(mounts)
	if err != nil {
		return err
	}
	if _, err := exf.environment(); err != nil {
		return err
	}
	ins, err := parseCopies("push", pushes)
	if err != nil {
		return err
	}
	outs, err := parseCopies("pull", pulls)
	if err != nil {
		return err
	}
	if len(ms) > 0 {
		if err := a.allowSources(ms); err != nil {
			return err
		}
	}
	inf.ephemeral = !*keep
	b, in, err := inf.create(ctx, a, "incusexec-run", "")
	if err != nil {
		return err
	}
	defer b.Close()
	defer func() {
		if *keep {
			fmt.Fprintf(a.stderr, "incusexec: kept instance %s\n", in.Name())
			return
		}
		cctx, cancel := cleanupCtx(ctx)
		defer cancel()
		if derr := in.Delete(cctx); derr != nil {
			fmt.Fprintf(a.stderr, "incusexec run: delete %s: %v\n", in.Name(), derr)
		}
	}()
	for _, m := range ms {
		p, err := in.Mount(ctx, m.alias, m.src, executor.MountOptions{ReadOnly: m.ro})
		if err != nil {
			return err
		}
		a.log.Info("mounted", "alias", m.alias, "source", m.src, "path", p)
	}
	user, err := exf.prepareUser(ctx, in)
	if err != nil {
		return err
	}
	for _, c := range ins {
		if err := pushPath(ctx, in, c.src, c.dst, executor.FileOptions{UID: user.UID, GID: user.GID, MkdirAll: true}, true); err != nil {
			return err
		}
	}
	runErr := exf.exec(ctx, a, in, argv)
	var ee *exitError
	if runErr != nil && !errors.As(runErr, &ee) {
		return runErr
	}
	for _, c := range outs {
		if err := pullPath(ctx, in, c.src, c.dst, true, a.stdout); err != nil {
			return errors.Join(runErr, err)
		}
	}
	return runErr
}

// allowSources makes the mount allowlist the named sources when the config
// has none: the operator at the command line names them, not a task.
func (a *app) allowSources(ms []mountSpec) error {
	a.extraRoots = nil
	for _, m := range ms {
		abs, err := filepath.Abs(m.src)
		if err != nil {
			return err
		}
		a.extraRoots = append(a.extraRoots, abs)
	}
	return nil
}

func cmdLaunch(ctx context.Context, a *app, args []string) error {
	fs := a.flagSet("launch")
	var inf instanceFlags
	inf.register(fs)
	name := fs.String("name", "", "instance `name` (default: the prefix and random digits)")
	eph := fs.Bool("ephemeral", false, "delete the instance when it stops")
	pos, _, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErr("unexpected arguments %q", pos)
	}
	inf.ephemeral = *eph
	b, in, err := inf.create(ctx, a, "incusexec-launch", *name)
	if err != nil {
		return err
	}
	defer b.Close()
	if a.g.json {
		return a.printJSON(map[string]string{"name": in.Name()})
	}
	fmt.Fprintln(a.stdout, in.Name())
	return nil
}

// ---- commands on an existing instance ----

// oneInstance parses NAME and flags, and returns the instance.
func oneInstance(ctx context.Context, a *app, fs *flag.FlagSet, args []string, npos int, usage string) (*incus.Backend, *incus.Instance, []string, []string, error) {
	pos, argv, err := parse(fs, args)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	if len(pos) < 1 || (npos >= 0 && len(pos) != npos) {
		return nil, nil, nil, nil, usageErr("want %s", usage)
	}
	b, in, err := a.instance(ctx, pos[0], nil)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	return b, in, pos[1:], argv, nil
}

func cmdExec(ctx context.Context, a *app, args []string) error {
	fs := a.flagSet("exec")
	var exf execFlags
	exf.register(fs)
	b, in, rest, argv, err := oneInstance(ctx, a, fs, args, -1, "exec NAME -- CMD...")
	if err != nil {
		return err
	}
	defer b.Close()
	if len(argv) == 0 {
		argv = rest
	} else if len(rest) > 0 {
		return usageErr("unexpected arguments %q before --", rest)
	}
	if _, err := exf.prepareUser(ctx, in); err != nil {
		return err
	}
	return exf.exec(ctx, a, in, argv)
}

func cmdPush(ctx context.Context, a *app, args []string) error {
	fs := a.flagSet("push")
	rec := fs.Bool("r", false, "copy a directory tree")
	uid := fs.Int("uid", 0, "owner `uid` of what is written")
	gid := fs.Int("gid", 0, "owner `gid` of what is written")
	mode := fs.String("mode", "", "permission bits of a pushed file, octal (default: the host file's, 0644 for stdin)")
	b, in, rest, _, err := oneInstance(ctx, a, fs, args, 3, "push NAME SRC DST")
	if err != nil {
		return err
	}
	defer b.Close()
	opts := executor.FileOptions{UID: *uid, GID: *gid, MkdirAll: true}
	if *mode != "" {
		m, err := strconv.ParseUint(*mode, 8, 32)
		if err != nil {
			return usageErr("--mode %q: want octal permission bits", *mode)
		}
		opts.Mode = permBits(m)
	}
	if rest[0] == "-" {
		return in.Push(ctx, rest[1], a.stdin, opts)
	}
	return pushPath(ctx, in, rest[0], rest[1], opts, *rec)
}

func permBits(m uint64) fs.FileMode {
	return fs.FileMode(m) & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
}

// pushPath copies a host file or, when dirs is set, a directory tree.
func pushPath(ctx context.Context, in executor.Instance, src, dst string, opts executor.FileOptions, dirs bool) error {
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	if st.IsDir() {
		if !dirs {
			return usageErr("%s is a directory (use -r)", src)
		}
		return in.PushTree(ctx, src, dst, opts)
	}
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	if opts.Mode == 0 {
		opts.Mode = st.Mode().Perm()
	}
	return in.Push(ctx, dst, f, opts)
}

func cmdPull(ctx context.Context, a *app, args []string) error {
	fs := a.flagSet("pull")
	rec := fs.Bool("r", false, "copy a directory tree")
	b, in, rest, _, err := oneInstance(ctx, a, fs, args, 3, "pull NAME SRC DST")
	if err != nil {
		return err
	}
	defer b.Close()
	return pullPath(ctx, in, rest[0], rest[1], *rec, a.stdout)
}

// pullPath copies a file of the instance to a host file (or stdout for
// "-") or, when dirs is set, a directory tree.
func pullPath(ctx context.Context, in executor.Instance, src, dst string, dirs bool, stdout io.Writer) error {
	st, err := in.Stat(ctx, src)
	if err != nil {
		return err
	}
	if st.IsDir() {
		if !dirs {
			return usageErr("%s:%s is a directory (use -r)", in.Name(), src)
		}
		return in.PullTree(ctx, src, dst)
	}
	if dst == "-" {
		_, err := in.Pull(ctx, src, stdout)
		return err
	}
	if hs, err := os.Stat(dst); err == nil && hs.IsDir() {
		dst = filepath.Join(dst, filepath.Base(src))
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".incusexec-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	info, err := in.Pull(ctx, src, tmp)
	if err == nil {
		err = tmp.Chmod(info.Mode.Perm())
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}

func cmdMount(ctx context.Context, a *app, args []string) error {
	fs := a.flagSet("mount")
	ro := fs.Bool("ro", false, "read-only inside the instance")
	shift := fs.Bool("shift", false, "idmapped mount (host root owns what the container's root owns)")
	pos, _, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 3 {
		return usageErr("want mount NAME ALIAS SRC")
	}
	if err := a.allowSources([]mountSpec{{alias: pos[1], src: pos[2]}}); err != nil {
		return err
	}
	b, in, err := a.instance(ctx, pos[0], nil)
	if err != nil {
		return err
	}
	defer b.Close()
	p, err := in.Mount(ctx, pos[1], pos[2], executor.MountOptions{ReadOnly: *ro, Shift: *shift})
	if errors.Is(err, mount.ErrUnreadable) {
		return fmt.Errorf("%w\n(with incusexec: mount --shift, or chmod o+rx %s)", err, pos[2])
	}
	if err != nil {
		return err
	}
	if a.g.json {
		return a.printJSON(map[string]string{"instance": in.Name(), "alias": pos[1], "path": p})
	}
	fmt.Fprintln(a.stdout, p)
	return nil
}

func cmdUnmount(ctx context.Context, a *app, args []string) error {
	b, in, rest, _, err := oneInstance(ctx, a, a.flagSet("unmount"), args, 2, "unmount NAME ALIAS")
	if err != nil {
		return err
	}
	defer b.Close()
	return in.Unmount(ctx, rest[0])
}

func cmdStop(ctx context.Context, a *app, args []string) error {
	fs := a.flagSet("stop")
	timeout := fs.Duration("timeout", 0, "graceful shutdown `time` before forcing (default 30s or the config's stop_grace)")
	pos, _, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErr("want stop NAME")
	}
	b, in, err := a.instance(ctx, pos[0], func(cfg *incus.Config) {
		if *timeout > 0 {
			cfg.StopGrace = *timeout
		}
	})
	if err != nil {
		return err
	}
	defer b.Close()
	return in.Stop(ctx)
}

func cmdDelete(ctx context.Context, a *app, args []string) error {
	b, in, _, _, err := oneInstance(ctx, a, a.flagSet("delete"), args, 1, "delete NAME")
	if err != nil {
		return err
	}
	defer b.Close()
	return in.Delete(ctx)
}

func cmdStats(ctx context.Context, a *app, args []string) error {
	b, in, _, _, err := oneInstance(ctx, a, a.flagSet("stats"), args, 1, "stats NAME")
	if err != nil {
		return err
	}
	defer b.Close()
	s, err := in.Part().Stats(ctx)
	if err != nil {
		return err
	}
	return a.printJSON(map[string]any{
		"instance": in.Name(), "status": s.Status, "cpus": s.CPUs,
		"cpu_time_seconds": s.CPUTime.Seconds(),
		"memory_used":      s.MemoryUsed, "memory_total": s.MemoryTotal,
		"disk_used": s.DiskUsed, "disk_available": s.DiskAvailable,
		"processes": s.Processes,
	})
}

func cmdList(ctx context.Context, a *app, args []string) error {
	fs := a.flagSet("list")
	pos, _, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErr("unexpected arguments %q", pos)
	}
	b, _, err := a.backend(ctx, nil)
	if err != nil {
		return err
	}
	defer b.Close()
	names, err := b.List(ctx)
	if err != nil {
		return err
	}
	type row struct {
		Name   string `json:"name"`
		Status string `json:"status"`
	}
	rows := []row{}
	for _, n := range names {
		r := row{Name: n, Status: "?"}
		if in, err := b.Instance(ctx, n); err == nil {
			if st, err := in.Part().Status(ctx); err == nil {
				r.Status = st.String()
			}
		} else if errors.Is(err, executor.ErrNotFound) {
			continue // gone meanwhile
		}
		rows = append(rows, r)
	}
	if a.g.json {
		return a.printJSON(rows)
	}
	for _, r := range rows {
		fmt.Fprintf(a.stdout, "%-30s %s\n", r.Name, r.Status)
	}
	return nil
}

func cmdVirtArgs(ctx context.Context, a *app, args []string) error {
	fs := a.flagSet("virt-args")
	image := fs.String("image", "", "image `alias` (required)")
	vm := fs.Bool("vm", false, "the image is a VM image")
	profile := fs.String("profile", "", "the `profile` autopkgtest gives the instance (default: the configured one)")
	pos, _, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 || *image == "" {
		return usageErr("want virt-args --image A")
	}
	_, fc, _ := a.executorConfig()
	b, _, err := a.backend(ctx, func(cfg *incus.Config) {
		if fc != nil && fc.Profile != nil && fc.Profile.Name != "" {
			cfg.Profiles = append(slices.Clone(cfg.Profiles), fc.Profile.Name)
		}
		if *profile != "" {
			cfg.Profiles = append(slices.Clone(cfg.Profiles), *profile)
		}
		if len(cfg.Profiles) == 0 {
			cfg.Profiles = []string{"default"}
		}
	})
	if err != nil {
		return err
	}
	defer b.Close()
	ex, err := b.Executor(incus.Image{Alias: *image, VM: *vm})
	if err != nil {
		return err
	}
	if a.g.json {
		return a.printJSON(ex.AutopkgtestArgs())
	}
	fmt.Fprintln(a.stdout, strings.Join(ex.AutopkgtestArgs(), " "))
	return nil
}

func cmdGC(ctx context.Context, a *app, args []string) error {
	fs := a.flagSet("gc")
	older := fs.Duration("older-than", 0, "only instances created more than this `long` ago (default: all)")
	networks := fs.Bool("networks", false, "also remove the owner's bridges, profiles and ACLs when unused")
	pos, _, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErr("unexpected arguments %q", pos)
	}
	b, cfg, err := a.backend(ctx, nil)
	if err != nil {
		return err
	}
	defer b.Close()
	deleted, gcErr := b.GC(ctx, *older, nil)
	var changes []netbridge.Change
	if *networks && gcErr == nil {
		changes, gcErr = b.Cleanup(ctx)
	}
	if a.g.json {
		var ch []string
		for _, c := range changes {
			ch = append(ch, c.String())
		}
		if err := a.printJSON(map[string]any{"deleted": nonNil(deleted), "network_changes": nonNil(ch)}); err != nil {
			return err
		}
		return gcErr
	}
	for _, n := range deleted {
		fmt.Fprintf(a.stdout, "instance %s deleted\n", n)
	}
	for _, c := range changes {
		fmt.Fprintln(a.stdout, c.String())
	}
	if len(deleted) == 0 && len(changes) == 0 && gcErr == nil {
		fmt.Fprintf(a.stdout, "nothing of owner %s to delete\n", cfg.Owner)
	}
	return gcErr
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// cmdBench hands over to the benchmark suite (internal/bench), passing on
// the global flags it understands.
func cmdBench(ctx context.Context, a *app, args []string) error {
	var pre []string
	if a.g.socket != "" {
		pre = append(pre, "--socket", a.g.socket)
	}
	if a.g.json {
		pre = append(pre, "--json")
	}
	if a.g.verbose {
		pre = append(pre, "-v")
	}
	err := bench.Command(ctx, append(pre, args...), a.stdout, a.stderr)
	if errors.Is(err, flag.ErrHelp) {
		return &exitError{code: exitUsage}
	}
	return err
}
