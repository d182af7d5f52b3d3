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
	"strings"
	"syscall"
	"time"
)

// Exit codes besides a command's own.
const (
	exitFailure     = 125 // the executor failed (as docker run and podman run do)
	exitUsage       = 2
	exitTimeout     = 124 // run/exec --timeout ran out (as timeout(1) does)
	exitInterrupted = 130 // SIGINT or SIGTERM
)

const defaultOwner = "incusexec"

// cleanupTimeout bounds the clean-up that follows a cancelled command.
const cleanupTimeout = 2 * time.Minute

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second signal kills at once
	}()
	args := os.Args[1:]
	if filepath.Base(os.Args[0]) == virtServerName {
		args = append([]string{"virt-server"}, args...)
	}
	os.Exit(run(ctx, args, os.Stdin, os.Stdout, os.Stderr))
}

// app is one invocation: its streams, global flags and logger.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	g              globals
	log            *slog.Logger
	// extraRoots are mount sources named on the command line, the mount
	// allowlist when the config has none.
	extraRoots []string
}

type command struct {
	name, args, help string
	run              func(ctx context.Context, a *app, args []string) error
}

var commands []command

func init() {
	commands = []command{
		{"setup", "[--network N] [--profile P] [--subnet CIDR] [--nic-name IF] [--pool POOL] [--nat]", "ensure the bridge, the profile and a storage pool; print what changed", cmdSetup},
		{"image", "import TARBALL --alias A [...] | rm ALIAS", "import a system tarball as an image, or remove an image", cmdImage},
		{"run", "--image A [--profile P]... [--vm] [--mount ALIAS=SRC[:ro]]... [--push SRC:DST]... [--pull SRC:DST]... [--user U] [--env K=V]... [--cwd D] [--timeout DUR] [--ready R] [--keep] -- CMD...", "run one command in a fresh ephemeral instance", cmdRun},
		{"launch", "--image A [--profile P]... [--name N] [--ephemeral] [--vm] [--ready R]", "create and start an instance; print its name", cmdLaunch},
		{"exec", "NAME [--user U] [--env K=V]... [--cwd D] [--timeout DUR] -- CMD...", "run a command in an instance; exit with its code", cmdExec},
		{"push", "NAME SRC DST [-r] [--uid N] [--gid N] [--mode M]", "copy a host file (- for stdin) or directory (-r) into an instance", cmdPush},
		{"pull", "NAME SRC DST [-r]", "copy a file (DST - for stdout) or directory (-r) out of an instance", cmdPull},
		{"mount", "NAME ALIAS SRC [--ro] [--shift]", "mount a host directory by alias; print the path inside", cmdMount},
		{"unmount", "NAME ALIAS", "release one mount of ALIAS", cmdUnmount},
		{"stop", "NAME [--timeout DUR]", "stop an instance, gracefully then by force", cmdStop},
		{"delete", "NAME", "force an instance off and delete it", cmdDelete},
		{"list", "", "list the owner's instances", cmdList},
		{"stats", "NAME", "print an instance's resource usage as JSON", cmdStats},
		{"virt-args", "--image A [--vm] [--profile P]", "print the autopkgtest-virt-incus arguments", cmdVirtArgs},
		{"pool", "fill|run|drain --name N [--image A] [--profile P]... [--ready R] [--size K] [--no-cold] [-- CMD...]", "a warm pool kept on the server across runs: fill it, run a command in a claimed instance, drain it", cmdPool},
		{"virt-server", "[-d] [--vm] IMAGE [-- INCUS-LAUNCH-ARGS] (also as autopkgtest-virt-incusexec)", "the autopkgtest virtualisation server (autopkgtest, sbuild --chroot-mode=autopkgtest)", cmdVirtServer},
		{"virt-exec", "[--relay=SOCKET] NAME -- CMD...", "the virt server's execute command: run CMD as root in the login environment (through the server's relay with --relay)", cmdVirtExec},
		{"gc", "[--older-than DUR] [--networks]", "delete the owner's leftover instances (and its bridge and profile)", cmdGC},
		{"demo", "[--backend incus|fake] [--debian] [--pool P]", "the whole library at work, then clean up", cmdDemo},
		{"bench", "[--image TARBALL] [--pool P,...] [--runs N] [--concurrency C] [--quick]", "time incusexec against the incus CLI and the raw API; print each ratio and its target", cmdBench},
	}
}

// run is main without the process: it returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	fs := a.flagSet("incusexec")
	fs.Usage = func() { a.usage() }
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	rest := fs.Args()
	if len(rest) == 0 {
		a.usage()
		return exitUsage
	}
	name := rest[0]
	if name == "help" {
		if len(rest) > 1 && rest[1] == "config" {
			stdout.Write(exampleConfig)
			return 0
		}
		a.g = globals{}
		fs.SetOutput(stdout)
		a.stderr = stdout
		a.usage()
		return 0
	}
	for _, c := range commands {
		if c.name != name {
			continue
		}
		a.setLogger()
		err := c.run(ctx, a, rest[1:])
		return a.exit(ctx, name, err)
	}
	fmt.Fprintf(stderr, "incusexec: unknown command %q (see incusexec help)\n", name)
	return exitUsage
}

// exitError carries an exit code that is not a failure of the executor
// (a command's own code, a usage error).
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func usageErr(format string, args ...any) error {
	return &exitError{code: exitUsage, msg: fmt.Sprintf(format, args...)}
}

func (a *app) exit(ctx context.Context, name string, err error) int {
	var ee *exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ee.msg != "" {
			fmt.Fprintf(a.stderr, "incusexec %s: %s\n", name, ee.msg)
		}
		return ee.code
	case ctx.Err() != nil:
		fmt.Fprintf(a.stderr, "incusexec %s: interrupted: %v\n", name, err)
		return exitInterrupted
	default:
		fmt.Fprintf(a.stderr, "incusexec %s: %v\n", name, err)
		return exitFailure
	}
}

func (a *app) setLogger() {
	if a.g.verbose {
		a.log = slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	} else {
		a.log = slog.New(slog.DiscardHandler)
	}
}

// flagSet returns a flag set with the global flags, which every command
// accepts before or after its own.
func (a *app) flagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(a.stderr)
	fs.StringVar(&a.g.config, "config", a.g.config, "YAML `file` in the shape of an ISM executor config (incusexec help config)")
	fs.StringVar(&a.g.socket, "socket", a.g.socket, "Incus unix `socket` (default $INCUS_SOCKET, $INCUS_DIR/unix.socket, /var/lib/incus/unix.socket)")
	fs.StringVar(&a.g.remote, "remote", a.g.remote, "Incus `URL` over HTTPS (client certificate from --config)")
	fs.StringVar(&a.g.project, "project", a.g.project, "Incus `project`")
	fs.StringVar(&a.g.target, "target", a.g.target, "cluster `member` for new instances")
	fs.StringVar(&a.g.owner, "owner", a.g.owner, "owner `label` of what is created (default "+defaultOwner+")")
	fs.BoolVar(&a.g.json, "json", a.g.json, "print JSON")
	fs.BoolVar(&a.g.verbose, "v", a.g.verbose, "log what the library does to stderr")
	return fs
}

// parse parses a command's flags, which may come before, between and
// after its positional arguments; everything after "--" is returned as
// the command to run.
func parse(fs *flag.FlagSet, args []string) (pos, cmd []string, err error) {
	before := args
	for i, s := range args {
		if s == "--" {
			before, cmd = args[:i], args[i+1:]
			break
		}
	}
	for {
		if err := fs.Parse(before); err != nil {
			return nil, nil, &exitError{code: exitUsage}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, cmd, nil
		}
		pos = append(pos, rest[0])
		before = rest[1:]
	}
}

func (a *app) usage() {
	w := a.stderr
	fmt.Fprintf(w, "incusexec: run work in Incus containers and VMs through the incusexec library.\n\n")
	fmt.Fprintf(w, "usage: incusexec [global flags] COMMAND [flags] [args]\n\ncommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.help)
		if c.args != "" {
			fmt.Fprintf(w, "  %-10s   %s\n", "", c.args)
		}
	}
	fmt.Fprintf(w, "\nglobal flags (accepted by every command):\n")
	fs := a.flagSet("incusexec")
	fs.SetOutput(w)
	fs.PrintDefaults()
	fmt.Fprintf(w, "\n`incusexec help config` prints an example configuration file.\n")
	fmt.Fprintf(w, "exit codes: run and exec exit with the command's code; 124 when --timeout ran out,\n"+
		"125 when the executor failed (the reason on stderr), 130 when interrupted, 2 for usage errors.\n")
}

// multi is a repeatable flag.
type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(s string) error { *m = append(*m, s); return nil }
