package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/instance/virtserver"
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
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGHUP, syscall.SIGPIPE)
	defer stop()
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
	m, err := instance.New(c, instance.Config{Owner: cfg.Owner, Prefix: "avs-", StopGrace: cfg.StopGrace, Logger: a.log})
	if err != nil {
		return err
	}
	defer m.Close()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	tb, err := virtserver.NewIncus(virtserver.IncusConfig{
		Manager: m, Client: c, Spec: va.Spec, Spares: -1,
		Exec: append(append([]string{self}, a.connectionArgs()...), "virt-exec"), Logger: a.log,
	})
	if err != nil {
		return err
	}
	s := &virtserver.Server{Testbed: tb, Name: virtServerName, Logger: a.log}
	if err := s.Serve(ctx, a.stdin, a.stdout); err != nil {
		if ctx.Err() != nil {
			return err // a signal: exit 130, testbed already deleted
		}
		return &exitError{code: 12, msg: err.Error()} // as the stock servers do
	}
	return nil
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
// with its status (255 when it could not).
func cmdVirtExec(ctx context.Context, a *app, args []string) error {
	if len(args) < 3 || args[1] != "--" {
		return &exitError{code: virtserver.ExitAuxFailed, msg: "usage: virt-exec NAME -- COMMAND..."}
	}
	name, argv := args[0], args[2:]
	if err := executor.CheckName(name); err != nil {
		return &exitError{code: virtserver.ExitAuxFailed, msg: err.Error()}
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
	if isDevNull(stdin) {
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

// isDevNull reports whether r is a file open on the null device (the
// character device /dev/null is), which has nothing to give a command.
func isDevNull(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok || f == nil {
		return false
	}
	fi, err := f.Stat()
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return false
	}
	null, err := os.Stat(os.DevNull)
	if err != nil {
		return false
	}
	a, okA := fi.Sys().(*syscall.Stat_t)
	b, okB := null.Sys().(*syscall.Stat_t)
	return okA && okB && a.Rdev == b.Rdev
}
