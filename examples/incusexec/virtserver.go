package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/instance/virtserver"
	"github.com/incusexec/incusexec/instance/virtserver/execrelay"
)

// virtServerName is the name autopkgtest and sbuild find the server by
// (autopkgtest-virt-NAME); the binary answers to it as argv[0].
const virtServerName = "autopkgtest-virt-incusexec"

// connectionFlags are the global flags that may also come first in the
// virt server's own arguments, for callers (sbuild) that can only append
// server options and filter the environment.
var connectionFlags = []string{"socket", "remote", "project", "config", "owner", "target"}

// takeConnectionFlags moves leading --socket=S (or --socket S) style
// flags from args into a's globals.
func (a *app) takeConnectionFlags(args []string) ([]string, error) {
	for len(args) > 0 {
		name, val, hasVal := strings.Cut(strings.TrimPrefix(args[0], "--"), "=")
		if !strings.HasPrefix(args[0], "--") || !contains(connectionFlags, name) {
			return args, nil
		}
		n := 1
		if !hasVal {
			if len(args) < 2 {
				return nil, usageErr("--%s needs a value", name)
			}
			val, n = args[1], 2
		}
		fs := a.flagSet("virt-server")
		if err := fs.Set(name, val); err != nil {
			return nil, usageErr("--%s: %v", name, err)
		}
		args = args[n:]
	}
	return args, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// defaultSocket is where Incus's client would connect without a flag,
// resolved now so that the execute command names it explicitly.
func defaultSocket() string {
	if s := os.Getenv("INCUS_SOCKET"); s != "" {
		return s
	}
	if d := os.Getenv("INCUS_DIR"); d != "" {
		return filepath.Join(d, "unix.socket")
	}
	return "/var/lib/incus/unix.socket"
}

// cmdVirtServer is autopkgtest-virt-incusexec: the autopkgtest
// virtualisation server on stdin/stdout, with the arguments of
// autopkgtest-virt-incus.
func cmdVirtServer(ctx context.Context, a *app, args []string) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGHUP)
	defer stop()
	// A write to a closed pipe returns EPIPE instead: the server's own
	// stdout (Serve then ends and cleans up) and the callers' streams the
	// relay writes into (one reader going away must not stop the server;
	// a SIGPIPE being watched would be delivered for any of them).
	signal.Ignore(syscall.SIGPIPE)
	args, err := a.takeConnectionFlags(args)
	if err != nil {
		return err
	}
	va, err := virtserver.ParseArgs(args)
	if err != nil {
		return usageErr("%v", err)
	}
	if va.Debug && !a.g.verbose {
		a.g.verbose = true
		a.setLogger()
	}
	if a.g.remote == "" && a.g.socket == "" {
		a.g.socket = defaultSocket()
	}
	c, cfg, err := a.client(ctx)
	if err != nil {
		return err
	}
	m, err := instance.New(c, instance.Config{Owner: cfg.Owner, Prefix: "avs-", StopGrace: cfg.StopGrace, Logger: a.log,
		// The testbed lives until the next revert or close and runs many
		// short commands: their output stays with it (deleted with it)
		// rather than costing two requests each.
		KeepExecOutputUpTo: keepTestbedOutput})
	if err != nil {
		return err
	}
	defer m.Close()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	// Testbed commands come back to this process through the relay, and
	// run on its connection: the execute command only hands over its
	// streams.
	var testbed atomic.Pointer[virtserver.Incus] // set once made, below
	relay, err := execrelay.New(func(ctx context.Context, name string, argv []string, stdin io.Reader, stdout, stderr io.Writer) int {
		tb := testbed.Load()
		if tb == nil {
			fmt.Fprintln(stderr, "autopkgtest-virt-incusexec: execute: no testbed yet")
			return virtserver.ExitAuxFailed
		}
		return tb.Execute(ctx, name, argv, stdin, stdout, stderr)
	}, a.log)
	if err != nil {
		return err
	}
	defer relay.Close()
	execCmd := append(append([]string{self}, a.connectionArgs()...), "virt-exec", "--relay="+relay.Path())
	if helper := findExecHelper(self); helper != "" {
		execCmd = []string{helper, relay.Path()}
	}
	a.log.Debug("execute command", "argv", execCmd)
	// The testbed's commands write their output into a directory shared
	// with the instance when the daemon is on this host and places its
	// instances here (its unix socket, not a cluster).
	outputDir := ""
	if a.g.remote == "" && !c.IsClustered() {
		outputDir = os.TempDir()
	}
	tb, err := virtserver.NewIncus(virtserver.IncusConfig{
		Manager: m, Client: c, Spec: va.Spec, Spares: -1, Exec: execCmd, Logger: a.log, OutputDir: outputDir,
		// A spare refilled beside the tests pays off only with CPUs to
		// spare (see IncusConfig.Refill): not on a host of two.
		Refill: runtime.NumCPU() > 2,
	})
	if err != nil {
		return err
	}
	testbed.Store(tb)
	s := &virtserver.Server{Testbed: tb, Name: virtServerName, Logger: a.log}
	if err := s.Serve(ctx, a.stdin, a.stdout); err != nil {
		if ctx.Err() != nil {
			return err // a signal: exit 130, testbed already deleted
		}
		return &exitError{code: 12, msg: err.Error()} // as the stock servers do
	}
	return nil
}

// execHelperName is the small execute command (./virtexec), which make
// install puts beside the binary.
const execHelperName = "incusexec-virt-exec"

// keepTestbedOutput bounds the recorded output of one testbed command
// left with the testbed (instance.Config.KeepExecOutputUpTo): a build's
// log goes at once.
const keepTestbedOutput = 1 << 20

// findExecHelper looks for the execute helper beside the program as it was
// run (the autopkgtest-virt-incusexec found on PATH) and beside the binary
// itself; "" when there is none.
func findExecHelper(self string) string {
	var dirs []string
	if p, err := exec.LookPath(os.Args[0]); err == nil {
		if abs, err := filepath.Abs(p); err == nil {
			dirs = append(dirs, filepath.Dir(abs))
		}
	}
	dirs = append(dirs, filepath.Dir(self))
	for _, d := range dirs {
		p := filepath.Join(d, execHelperName)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// connectionArgs are the global flags that reach the same daemon, as
// absolute paths: the execute command carries them because sbuild runs it
// with a filtered environment.
func (a *app) connectionArgs() []string {
	var out []string
	add := func(name, v string, path bool) {
		if v == "" {
			return
		}
		if path {
			if abs, err := filepath.Abs(v); err == nil {
				v = abs
			}
		}
		out = append(out, "--"+name+"="+v)
	}
	add("config", a.g.config, true)
	add("socket", a.g.socket, true)
	add("remote", a.g.remote, false)
	add("project", a.g.project, false)
	add("owner", a.g.owner, false)
	return out
}

// cmdVirtExec is the execute command print-execute-command names: it runs
// one command in the instance as root in the login environment and exits
// with its status (255 when it could not). With --relay=SOCKET the virt
// server runs it on its own connection (execrelay.Relay) and this process
// only hands over its streams; without, it connects to the daemon itself.
func cmdVirtExec(ctx context.Context, a *app, args []string) error {
	relay := ""
	if len(args) > 0 && strings.HasPrefix(args[0], "--relay=") {
		relay, args = strings.TrimPrefix(args[0], "--relay="), args[1:]
	}
	if len(args) < 3 || args[1] != "--" {
		return &exitError{code: virtserver.ExitAuxFailed, msg: "usage: virt-exec [--relay=SOCKET] NAME -- COMMAND..."}
	}
	name, argv := args[0], args[2:]
	if err := executor.CheckName(name); err != nil {
		return &exitError{code: virtserver.ExitAuxFailed, msg: err.Error()}
	}
	if relay != "" {
		in, ok1 := a.stdin.(*os.File)
		out, ok2 := a.stdout.(*os.File)
		errw, ok3 := a.stderr.(*os.File)
		if !ok1 || !ok2 || !ok3 || in == nil || out == nil || errw == nil {
			return &exitError{code: virtserver.ExitAuxFailed, msg: "virt-exec --relay: stdin, stdout and stderr must be files"}
		}
		code, err := execrelay.Execute(ctx, relay, name, argv, in, out, errw)
		if err != nil {
			return &exitError{code: virtserver.ExitAuxFailed, msg: fmt.Sprintf("virt-exec %q in %s: %v", argv, name, err)}
		}
		if code != 0 {
			return &exitError{code: code}
		}
		return nil
	}
	c, cfg, err := a.client(ctx)
	if err != nil {
		return &exitError{code: virtserver.ExitAuxFailed, msg: err.Error()}
	}
	m, err := instance.New(c, instance.Config{Owner: cfg.Owner, Logger: a.log})
	if err != nil {
		return &exitError{code: virtserver.ExitAuxFailed, msg: err.Error()}
	}
	defer m.Close()
	stdin := a.stdin
	if execrelay.IsDevNull(stdin) {
		// autopkgtest runs every testbed command with stdin on /dev/null:
		// no input means no FIFO and no feeder exec in the instance.
		stdin = nil
	}
	code := virtserver.Execute(ctx, m.Instance(name), argv, stdin, a.stdout, a.stderr)
	if code != 0 {
		return &exitError{code: code}
	}
	return nil
}
