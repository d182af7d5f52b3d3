package virtserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"
)

// ErrProtocol says that the caller broke the protocol: an unknown command,
// a command in the wrong state, wrong arguments, a bad escape.
var ErrProtocol = errors.New("virt-server protocol error")

// Testbed is what the server needs of the machine under it: a testbed it
// can open, revert, reboot and close, run its own commands in, and copy
// files to and from. The Incus implementation is [Incus]; tests use fakes.
type Testbed interface {
	// Open makes a fresh testbed and waits until it is ready.
	Open(ctx context.Context) error
	// Revert puts the testbed back into the state Open left it in: files,
	// packages, processes.
	Revert(ctx context.Context) error
	// Close removes the testbed. It is called at most once per Open.
	Close(ctx context.Context) error
	// BootID identifies the testbed's current boot.
	BootID(ctx context.Context) (string, error)
	// Reboot waits until the testbed runs a boot other than since and is
	// ready again; with trigger it first restarts the testbed itself,
	// otherwise something inside it is expected to reboot it.
	Reboot(ctx context.Context, since string, trigger bool) error
	// Run runs argv as root in the testbed and returns its exit status.
	Run(ctx context.Context, c Command) (int, error)
	// CopyDown copies the host file (or, with dir, the contents of the host
	// directory) to the testbed path; CopyUp the other way.
	CopyDown(ctx context.Context, host, tb string, dir bool) error
	CopyUp(ctx context.Context, tb, host string, dir bool) error
	// ExecuteCommand is the argv prefix that runs a command in the testbed,
	// the answer to print-execute-command.
	ExecuteCommand() []string
	// Capabilities are the testbed's own capabilities (isolation-*,
	// suggested-normal-user=...), valid after Open.
	Capabilities() []string
}

// Command is a command the server runs in the testbed for itself.
type Command struct {
	Args           []string
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// Server speaks autopkgtest's virtualisation server protocol on a Testbed.
// A zero Server is not usable: Testbed is required.
type Server struct {
	Testbed Testbed
	// Name is the program name used in failure messages.
	Name string
	// Logger receives what the server does; discarded when nil.
	Logger *slog.Logger
	// CleanupTimeout bounds the clean-up after an error, EOF or
	// cancellation (one minute when zero).
	CleanupTimeout time.Duration
	// TTY opens the terminal the shell command uses (/dev/tty when nil).
	TTY func() (io.ReadWriteCloser, error)

	open    bool
	downtmp string // scratch directory of the opened testbed, kept across reverts
	log     *slog.Logger
}

// serverCapabilities are advertised whatever the testbed.
var serverCapabilities = []string{"revert", "revert-full-system", "root-on-testbed", "reboot"}

// Serve answers the commands read from in on out until quit, end of input
// or the end of ctx. Whatever happens, an open testbed is closed before it
// returns. It returns nil after quit.
func (s *Server) Serve(ctx context.Context, in io.Reader, out io.Writer) (err error) {
	if s.Testbed == nil {
		return fmt.Errorf("%w: Server.Testbed is nil", ErrProtocol)
	}
	s.log = s.Logger
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	defer func() {
		if cerr := s.cleanup(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	lines := make(chan string)
	readErr := make(chan error, 1)
	go func() {
		r := bufio.NewReader(in)
		for {
			line, err := r.ReadString('\n')
			if line != "" && err == nil {
				select {
				case lines <- line:
					continue
				case <-ctx.Done():
				}
			}
			if err == nil || errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			readErr <- err
			return
		}
	}()
	if _, err := io.WriteString(out, "ok\n"); err != nil {
		return err
	}
	for {
		var line string
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case err := <-readErr:
			return fmt.Errorf("reading commands: %w (caller quit?)", err)
		case line = <-lines:
		}
		reply, quit, err := s.command(ctx, line)
		var f *failed
		if errors.As(err, &f) {
			if _, err := io.WriteString(out, f.word+"\n"); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		_, err = io.WriteString(out, strings.Join(append([]string{"ok"}, reply...), " ")+"\n")
		if quit {
			// autopkgtest closes its end before it sends quit, and the
			// stock servers exit without answering: the reply may be lost.
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (s *Server) cleanup() error {
	if !s.open {
		return nil
	}
	s.open = false
	t := s.CleanupTimeout
	if t == 0 {
		t = time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), t)
	defer cancel()
	s.log.Debug("closing the testbed")
	if err := s.Testbed.Close(ctx); err != nil {
		return fmt.Errorf("close testbed: %w", err)
	}
	return nil
}

// command runs one command line and returns the words after "ok".
func (s *Server) command(ctx context.Context, line string) (reply []string, quit bool, err error) {
	fields := strings.Fields(line)
	if len(fields) == 0 {
		return nil, false, fmt.Errorf("%w: empty command", ErrProtocol)
	}
	c := make([]string, len(fields))
	for i, f := range fields {
		if c[i], err = url.PathUnescape(f); err != nil {
			return nil, false, fmt.Errorf("%w: command %q: bad escape in %q", ErrProtocol, fields[0], f)
		}
	}
	name, args := c[0], c[1:]
	s.log.Debug("command", "line", strings.TrimSpace(line))
	nargs := func(min, max int) error {
		if len(args) < min || (max >= 0 && len(args) > max) {
			return fmt.Errorf("%w: command %q: %d arguments", ErrProtocol, name, len(args))
		}
		return nil
	}
	needOpen := func() error {
		if !s.open {
			return fmt.Errorf("%w: command %q when the testbed is not open", ErrProtocol, name)
		}
		return nil
	}
	switch name {
	case "capabilities":
		if err := nargs(0, 0); err != nil {
			return nil, false, err
		}
		caps := append([]string{}, serverCapabilities...)
		if s.open {
			caps = append(caps, s.Testbed.Capabilities()...)
		}
		return caps, false, nil
	case "quit":
		return nil, true, nargs(0, 0)
	case "open":
		if err := nargs(0, 0); err != nil {
			return nil, false, err
		}
		if s.open {
			return nil, false, fmt.Errorf("%w: open when already open", ErrProtocol)
		}
		// Open before the call: a testbed half made when Open fails (or
		// the server is killed) is closed by the clean-up.
		s.open = true
		if err := s.Testbed.Open(ctx); err != nil {
			return nil, false, fmt.Errorf("open testbed: %w", err)
		}
		if err := s.makeDowntmp(ctx); err != nil {
			return nil, false, err
		}
		return []string{quote(s.downtmp)}, false, nil
	case "close":
		if err := nargs(0, 0); err != nil {
			return nil, false, err
		}
		if err := needOpen(); err != nil {
			return nil, false, err
		}
		return nil, false, s.cleanup()
	case "revert":
		if err := nargs(0, 0); err != nil {
			return nil, false, err
		}
		if err := needOpen(); err != nil {
			return nil, false, err
		}
		if err := s.Testbed.Revert(ctx); err != nil {
			return nil, false, fmt.Errorf("revert testbed: %w", err)
		}
		if err := s.makeDowntmp(ctx); err != nil {
			return nil, false, err
		}
		return []string{quote(s.downtmp)}, false, nil
	case "reboot":
		if err := nargs(0, 1); err != nil {
			return nil, false, err
		}
		if len(args) == 1 && args[0] != "prepare-only" {
			return nil, false, fmt.Errorf("%w: reboot %q (want no argument or prepare-only)", ErrProtocol, args[0])
		}
		if err := needOpen(); err != nil {
			return nil, false, err
		}
		return nil, false, s.reboot(ctx, len(args) == 0)
	case "print-execute-command":
		if err := nargs(0, 0); err != nil {
			return nil, false, err
		}
		if err := needOpen(); err != nil {
			return nil, false, err
		}
		argv := s.Testbed.ExecuteCommand()
		q := make([]string, len(argv))
		for i, a := range argv {
			q[i] = quote(a)
		}
		return []string{strings.Join(q, ",")}, false, nil
	case "copydown", "copyup":
		if err := nargs(2, 2); err != nil {
			return nil, false, err
		}
		if err := needOpen(); err != nil {
			return nil, false, err
		}
		src, dst := args[0], args[1]
		if src == "" || dst == "" {
			return nil, false, fmt.Errorf("%w: %s: empty path", ErrProtocol, name)
		}
		dir := strings.HasSuffix(src, "/")
		if dir != strings.HasSuffix(dst, "/") {
			return nil, false, fmt.Errorf("%w: %s %q %q: paths disagree about being directories (trailing /)", ErrProtocol, name, src, dst)
		}
		if name == "copydown" {
			err = s.Testbed.CopyDown(ctx, src, dst, dir)
		} else {
			err = s.Testbed.CopyUp(ctx, src, dst, dir)
		}
		if err != nil {
			// Not fatal to the server; the caller decides.
			s.log.Error(name+" failed", "from", src, "to", dst, "err", err)
			fmt.Fprintf(os.Stderr, "%s: %s %s %s: %v\n", s.name(), name, src, dst, err)
			return nil, false, &failed{word: "copy-failed"}
		}
		return nil, false, nil
	case "shell":
		if err := nargs(1, -1); err != nil {
			return nil, false, err
		}
		if err := needOpen(); err != nil {
			return nil, false, err
		}
		s.shell(ctx, args[0], args[1:])
		return nil, false, nil
	}
	return nil, false, fmt.Errorf("%w: unknown command %q", ErrProtocol, name)
}

// failed is a command failure reported to the caller instead of "ok".
type failed struct{ word string }

func (f *failed) Error() string { return f.word }

func (s *Server) name() string {
	if s.Name != "" {
		return s.Name
	}
	return "autopkgtest-virt-incusexec"
}

// run runs argv as root and fails unless it exits 0 without a word on
// stderr; it returns stdout.
func (s *Server) run(ctx context.Context, argv ...string) (string, error) {
	var out, errb strings.Builder
	code, err := s.Testbed.Run(ctx, Command{Args: argv, Stdout: &out, Stderr: &errb})
	if err != nil {
		return "", fmt.Errorf("testbed command %q: %w", argv, err)
	}
	if code != 0 || errb.Len() > 0 {
		return "", fmt.Errorf("testbed command %q: exit status %d: %s", argv, code, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// makeDowntmp makes the scratch directory: a new one at the first open,
// the same path after a revert or reboot (built trees may hold absolute
// paths). The testbed is isolated, so it is world-writable.
func (s *Server) makeDowntmp(ctx context.Context) error {
	if s.downtmp != "" {
		_, err := s.run(ctx, "mkdir", "--mode=777", "--parents", s.downtmp)
		return err
	}
	out, err := s.run(ctx, "mktemp", "--directory", "--tmpdir", "autopkgtest.XXXXXX")
	if err != nil {
		return err
	}
	d := strings.TrimSpace(out)
	if !strings.HasPrefix(d, "/") || strings.ContainsAny(d, "\n'") {
		return fmt.Errorf("testbed mktemp gave %q, not a directory path", d)
	}
	if _, err := s.run(ctx, "chmod", "777", d); err != nil {
		return err
	}
	s.downtmp = d
	return nil
}

// stateDirs are where the scratch directory is saved across a reboot, the
// first writable one (/var/cache may be read-only on some images).
const stateDirs = "/var/cache /home"

// reboot saves the scratch directory inside the testbed (it may be on a
// tmpfs), releases a test waiting in autopkgtest-reboot-prepare, waits for
// the new boot and restores the scratch directory.
func (s *Server) reboot(ctx context.Context, trigger bool) error {
	// Read before releasing the test, which may reboot at once.
	since, err := s.Testbed.BootID(ctx)
	if err != nil {
		return fmt.Errorf("reboot: %w", err)
	}
	save := `for d in ` + stateDirs + `; do if [ -w "$d" ]; then ` +
		`tar --warning=none --create --absolute-names -f "$d/autopkgtest-tmpdir.tar" "$1"; ` +
		`rm -f /run/autopkgtest-reboot-prepare-mark; exit 0; fi; done; echo "no writable directory in ` + stateDirs + `" >&2; exit 1`
	if _, err := s.run(ctx, "sh", "-ec", save, "save", s.downtmp); err != nil {
		return fmt.Errorf("reboot: save scratch directory: %w", err)
	}
	if err := s.Testbed.Reboot(ctx, since, trigger); err != nil {
		return fmt.Errorf("reboot: %w", err)
	}
	restore := `for d in ` + stateDirs + `; do if [ -e "$d/autopkgtest-tmpdir.tar" ]; then ` +
		`tar --warning=none --extract --absolute-names -f "$d/autopkgtest-tmpdir.tar"; ` +
		`rm "$d/autopkgtest-tmpdir.tar"; exit 0; fi; done; echo "saved scratch directory not found" >&2; exit 1`
	if _, err := s.run(ctx, "sh", "-ec", restore); err != nil {
		return fmt.Errorf("reboot: restore scratch directory: %w", err)
	}
	return nil
}

// shell runs an interactive shell in dir, with env exported, on the
// terminal; failures are logged, as the stock servers do.
func (s *Server) shell(ctx context.Context, dir string, env []string) {
	open := s.TTY
	if open == nil {
		open = func() (io.ReadWriteCloser, error) { return os.OpenFile("/dev/tty", os.O_RDWR, 0) }
	}
	tty, err := open()
	if err != nil {
		s.log.Error("cannot run a shell", "err", err)
		fmt.Fprintf(os.Stderr, "%s: cannot run a shell: %v\n", s.name(), err)
		return
	}
	defer tty.Close()
	script := `cd "$1" || exit; shift; for e in "$@"; do export "$e"; done; exec bash -i`
	if term := os.Getenv("TERM"); term != "" {
		env = append(env, "TERM="+term)
	}
	argv := append([]string{"sh", "-c", script, "shell", dir}, env...)
	if _, err := s.Testbed.Run(ctx, Command{Args: argv, Stdin: tty, Stdout: tty, Stderr: tty}); err != nil {
		s.log.Error("shell", "err", err)
	}
}

// quote escapes a word for the protocol as Python's urllib.parse.quote
// does (which the caller undoes with unquote): everything but letters,
// digits and "_.-~/" as %XX.
func quote(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '_', c == '.', c == '-', c == '~', c == '/':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}
