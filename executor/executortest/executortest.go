package executortest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/incusexec/incusexec/executor"
)

// Options adapt the suite to a backend.
type Options struct {
	// MountRoot is a host directory under the backend's mount allowlist,
	// in which the suite makes the directories it mounts (os.TempDir()
	// when empty).
	MountRoot string
	// ForbiddenSource is an existing host directory outside the allowlist,
	// which Mount must refuse ("/etc" when empty).
	ForbiddenSource string
	// User is the unprivileged user the suite creates ("_debusine" when
	// empty).
	User string
	// RemoveImage lets the suite remove the image and bring it back with
	// EnsureImage; leave it false for a backend bound to an image that
	// EnsureImage cannot restore, or shared with other tests.
	RemoveImage bool
	// Timeout bounds each check (3 minutes when zero).
	Timeout time.Duration
	// Serial runs the checks one after the other instead of in parallel.
	Serial bool
	// Only, when not empty, names the checks to run (see Checks); the
	// others are left out. For a second image of a backend the whole
	// suite has already passed on: the checks whose outcome depends on
	// the image (Image, Lifecycle, Ephemeral, Environment, Users) are
	// what a new image can change.
	Only []string
}

// selected returns the checks opts.Only names (all when empty), in the
// suite's order, or an error naming one that is not a check.
func (o Options) selected() ([]Check, error) {
	all := Checks()
	if len(o.Only) == 0 {
		return all, nil
	}
	for _, name := range o.Only {
		if !slices.ContainsFunc(all, func(c Check) bool { return c.Name == name }) {
			return nil, fmt.Errorf("executortest: Options.Only: no check named %q", name)
		}
	}
	return slices.DeleteFunc(all, func(c Check) bool { return !slices.Contains(o.Only, c.Name) }), nil
}

func (o Options) withDefaults() Options {
	if o.ForbiddenSource == "" {
		o.ForbiddenSource = "/etc"
	}
	if o.User == "" {
		o.User = "_debusine"
	}
	if o.Timeout == 0 {
		o.Timeout = 3 * time.Minute
	}
	return o
}

// Check is one conformance check.
type Check struct {
	// Name is the check's name (and Run's subtest name).
	Name string
	// Run runs the check against ex and returns every failure it saw, or
	// nil. It deletes what it creates.
	Run func(ctx context.Context, ex executor.Executor, opts Options) error

	// serial checks change state that other executors of the same backend
	// share (the image).
	serial bool
}

// Checks returns the suite's checks in the order Test runs them.
func Checks() []Check {
	return []Check{
		check("Image", checkImage, true),
		check("Lifecycle", checkLifecycle, false),
		check("Deleted", checkDeleted, false),
		check("Ephemeral", checkEphemeral, false),
		check("Names", checkNames, false),
		check("ExecState", checkExecState, false),
		check("ExitCodes", checkExitCodes, false),
		check("Streams", checkStreams, false),
		check("Environment", checkEnvironment, false),
		check("Users", checkUsers, false),
		check("Cancel", checkCancel, false),
		check("Files", checkFiles, false),
		check("Mkdir", checkMkdir, false),
		check("Trees", checkTrees, false),
		check("Mounts", checkMounts, false),
		check("Stats", checkStats, false),
		check("Concurrency", checkConcurrency, false),
	}
}

func check(name string, fn func(c *checker), serial bool) Check {
	return Check{Name: name, serial: serial, Run: func(ctx context.Context, ex executor.Executor, opts Options) error {
		c := &checker{ctx: ctx, ex: ex, opts: opts.withDefaults()}
		func() {
			defer func() {
				if r := recover(); r != nil && r != errStop {
					panic(r)
				}
			}()
			fn(c)
		}()
		return c.finish()
	}}
}

// Test runs every check (those opts.Only names) against ex, one after
// the other, and returns their failures, each prefixed with the check's
// name.
func Test(ctx context.Context, ex executor.Executor, opts Options) error {
	opts = opts.withDefaults()
	checks, err := opts.selected()
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range checks {
		cctx, cancel := context.WithTimeout(ctx, opts.Timeout)
		if err := c.Run(cctx, ex, opts); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.Name, err))
		}
		cancel()
	}
	return errors.Join(errs...)
}

// Run runs every check (those opts.Only names) as a subtest, each
// against an executor from newExecutor (called in the subtest, so it may
// use t.Cleanup). The Image check runs first, alone; the others in
// parallel unless opts.Serial.
func Run(t *testing.T, newExecutor func(t *testing.T) executor.Executor, opts Options) {
	t.Helper()
	opts = opts.withDefaults()
	checks, err := opts.selected()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range checks {
		t.Run(c.Name, func(t *testing.T) {
			if !c.serial && !opts.Serial {
				t.Parallel()
			}
			ex := newExecutor(t)
			ctx, cancel := context.WithTimeout(t.Context(), opts.Timeout)
			defer cancel()
			if err := c.Run(ctx, ex, opts); err != nil {
				for _, e := range unjoin(err) {
					t.Error(e)
				}
			}
		})
	}
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// errStop ends a check early after a failure that makes the rest moot.
var errStop = errors.New("check stopped")

// checker collects the failures of one check and cleans up after it.
type checker struct {
	ctx  context.Context
	ex   executor.Executor
	opts Options

	mu      sync.Mutex
	errs    []error
	created []executor.Instance
	cleanup []func()
}

func (c *checker) errorf(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.errs = append(c.errs, fmt.Errorf(format, args...))
}

// fatalf records a failure and ends the check.
func (c *checker) fatalf(format string, args ...any) {
	c.errorf(format, args...)
	panic(errStop)
}

func (c *checker) defers(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cleanup = append(c.cleanup, f)
}

// finish deletes what the check created, checks that nothing of it is left
// and returns the failures.
func (c *checker) finish() error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx), 2*time.Minute)
	defer cancel()
	for i := len(c.cleanup) - 1; i >= 0; i-- {
		c.cleanup[i]()
	}
	names := map[string]bool{}
	for _, in := range c.created {
		names[in.Name()] = true
		if err := in.Delete(ctx); err != nil {
			c.errorf("cleanup: Delete(%s) = %v", in.Name(), err)
		}
	}
	if len(names) > 0 {
		left, err := c.ex.List(ctx)
		if err != nil {
			c.errorf("List after deleting everything: %v", err)
		}
		for _, n := range left {
			if names[n] {
				c.errorf("leak: instance %s still listed after Delete", n)
			}
		}
	}
	return errors.Join(c.errs...)
}

// create creates an instance that finish deletes.
func (c *checker) create(spec executor.Spec) executor.Instance {
	if err := c.ex.EnsureImage(c.ctx); err != nil {
		c.fatalf("EnsureImage: %v", err)
	}
	in, err := c.ex.Create(c.ctx, spec)
	if err != nil {
		c.fatalf("Create(%+v): %v", spec, err)
	}
	c.mu.Lock()
	c.created = append(c.created, in)
	c.mu.Unlock()
	return in
}

// started creates and starts an instance.
func (c *checker) started(spec executor.Spec) executor.Instance {
	in := c.create(spec)
	if err := in.Start(c.ctx); err != nil {
		c.fatalf("Start(%s): %v", in.Name(), err)
	}
	return in
}

// exec runs args in in and returns the result; an error from Exec is a
// failure.
func (c *checker) exec(in executor.Instance, cmd executor.Cmd) executor.Result {
	r, err := executor.Output(c.ctx, in, cmd)
	if err != nil {
		c.errorf("Exec(%s, %q): unexpected error %v", in.Name(), cmd.Args, err)
	}
	return r
}

// wantOutput runs cmd and wants exit code 0 and stdout want.
func (c *checker) wantOutput(in executor.Instance, cmd executor.Cmd, want string) {
	r := c.exec(in, cmd)
	if r.ExitCode != 0 || string(r.Stdout) != want {
		c.errorf("Exec(%q as %q in %q) = exit %d, stdout %q, stderr %q; want exit 0, stdout %q",
			cmd.Args, cmd.User, cmd.Dir, r.ExitCode, r.Stdout, r.Stderr, want)
	}
}

// wantIs wants err to wrap target and name the thing involved.
func (c *checker) wantIs(what string, err, target error, name string) {
	switch {
	case !errors.Is(err, target):
		c.errorf("%s = %v; want an error wrapping %q", what, err, target)
	case name != "" && !strings.Contains(err.Error(), name):
		c.errorf("%s = %q; want the error to name %q", what, err, name)
	}
}

func (c *checker) wantNil(what string, err error) bool {
	if err != nil {
		c.errorf("%s: %v", what, err)
		return false
	}
	return true
}

func (c *checker) wantStarted(in executor.Instance, want bool, when string) {
	got, err := in.IsStarted(c.ctx)
	if err != nil || got != want {
		c.errorf("IsStarted(%s) %s = %v, %v; want %v, nil", in.Name(), when, got, err, want)
	}
}

func random(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func cmd(args ...string) executor.Cmd { return executor.Cmd{Args: args} }

// pullString pulls p and returns its content and metadata.
func (c *checker) pull(in executor.Instance, p string) ([]byte, executor.FileInfo, error) {
	var b bytes.Buffer
	info, err := in.Pull(c.ctx, p, &b)
	return b.Bytes(), info, err
}
