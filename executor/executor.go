package executor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
	"time"
)

// Sentinel errors. Every backend wraps them (with the name of the thing
// involved) so that hosts can test failures with errors.Is whatever backend
// they run on; the Incus backend also keeps the wrapped part's own error
// (instance.ErrNotFound, mount.ErrNotAllowed, ...) in the chain.
var (
	// ErrUnavailable: the backend cannot run on this machine (no daemon,
	// no permission, no VM support), or the server or cluster member that
	// hosts an instance does not answer; the error says why.
	ErrUnavailable = errors.New("executor unavailable")
	// ErrNotFound: the instance, file, user or image does not exist.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: an instance with that name exists.
	ErrAlreadyExists = errors.New("already exists")
	// ErrNotRunning: the operation needs a running instance.
	ErrNotRunning = errors.New("instance not running")
	// ErrTimeout: a Cmd.Timeout or a readiness wait ran out.
	ErrTimeout = errors.New("timed out")
	// ErrNotAllowed: a mount source outside the allowlist, or an operation
	// the backend refuses.
	ErrNotAllowed = errors.New("not allowed")
	// ErrNotMounted: Unmount of an alias that is not mounted.
	ErrNotMounted = errors.New("not mounted")
	// ErrInvalid: bad input from the host (an invalid instance name, a
	// relative path, an empty command).
	ErrInvalid = errors.New("invalid argument")
)

// Sentinel returns a new sentinel error whose message is msg and that
// errors.Is also reports as kind, one of the sentinels above. The parts of
// a backend declare their own sentinels with it (mount.ErrNotHeld is
// Sentinel("mount: handle not held", ErrNotMounted)), so that a host's
// errors.Is(err, executor.ErrNotMounted) holds on any error of theirs with
// no table to keep, and their own sentinel stays in the chain for callers
// that use the part directly.
func Sentinel(msg string, kind error) error { return &sentinel{msg: msg, kind: kind} }

type sentinel struct {
	msg  string
	kind error
}

func (s *sentinel) Error() string { return s.msg }
func (s *sentinel) Unwrap() error { return s.kind }

// OwnerKey is the configuration key (an Incus user.* key) under which
// every part labels what it creates (instances, images, bridges, profiles,
// storage pools) with its owner, so that GC and cleanup touch only their
// own.
const OwnerKey = "user.incusexec.owner"

// Executor is bound to one image and creates instances from it. It is the
// interface Debusine's executors have (available, download_image, create,
// get_statistics, autopkgtest_virt_args) in Go. Implementations are safe for
// concurrent use.
type Executor interface {
	// Image returns the image alias the executor creates instances from.
	Image() string
	// Available reports whether the backend can run on this machine: nil,
	// or an error wrapping ErrUnavailable that says why not.
	Available(ctx context.Context) error
	// EnsureImage makes the image available to Create (importing or
	// downloading it when missing). It is idempotent.
	EnsureImage(ctx context.Context) error
	// RemoveImage deletes the image; nil when it is already gone.
	RemoveImage(ctx context.Context) error
	// Create creates a stopped instance from the image.
	Create(ctx context.Context, spec Spec) (Instance, error)
	// Statistics returns inst's resource usage (inst.Stats).
	Statistics(ctx context.Context, inst Instance) (Stats, error)
	// List returns the names of the instances this executor's owner has
	// that still exist: what a crashed host leaves behind, and how tests
	// find leaks.
	List(ctx context.Context) ([]string, error)
	// AutopkgtestArgs returns the arguments for autopkgtest-virt-incus:
	// [alias, "--", "--profile", P], with "--vm" first for VM images.
	AutopkgtestArgs() []string
}

// Spec describes an instance to create. The zero Spec is a persistent
// instance with a generated name.
type Spec struct {
	// Name is the instance name; empty means the executor's prefix plus a
	// random suffix, retried on collision.
	Name string
	// ID is the host's identifier of the work (Debusine's work request),
	// recorded with the instance so that leaked instances can be traced.
	ID string
	// Ephemeral instances are deleted by the backend when they stop.
	Ephemeral bool
	// Profiles are applied after the executor's own.
	Profiles []string
	// Config is extra instance configuration (limits.cpu=2, ...).
	Config map[string]string
	// Devices are extra devices by name.
	Devices map[string]map[string]string
}

// Instance is one container or VM: the four parts below, which a host (or
// a helper) that needs only one of them can take alone. Every method takes
// a context and honours its cancellation; all are safe for concurrent use.
// After Delete, every method except Stop and Delete (which return nil)
// fails with ErrNotFound.
type Instance interface {
	Lifecycle
	Runner
	Files
	Mounts
}

// Lifecycle starts, stops and deletes an instance and reports on it.
type Lifecycle interface {
	// Name is the instance's name on the backend.
	Name() string

	// Start starts the instance and waits until it is ready; a running
	// instance is left alone.
	Start(ctx context.Context) error
	// Stop stops the instance, gracefully and then by force; nil when it is
	// already stopped or gone. An ephemeral instance is gone afterwards.
	Stop(ctx context.Context) error
	// Restart stops (if running) and starts the instance again.
	Restart(ctx context.Context) error
	// Delete stops and deletes the instance; nil when it is already gone.
	Delete(ctx context.Context) error
	// IsStarted reports whether the instance is running.
	IsStarted(ctx context.Context) (bool, error)

	// Stats returns the instance's resource usage.
	Stats(ctx context.Context) (Stats, error)
}

// Runner runs commands in a running instance, as root or as a user.
type Runner interface {
	// Exec runs cmd in the running instance and returns its exit code once
	// the process has exited and its output is drained. A non-zero exit
	// is not an error; err is for failures to run it (ErrNotRunning,
	// ErrNotFound for an unknown user, ErrTimeout when cmd.Timeout runs
	// out, ctx's error when ctx ends; the process is killed in both).
	// A command that does not exist exits with 127.
	Exec(ctx context.Context, cmd Cmd) (exitCode int, err error)

	// EnsureUser returns the unprivileged user name, creating it and its
	// group, both named name, with a home directory (Debusine's
	// "_debusine") when it does not exist; an existing user is returned as
	// is.
	EnsureUser(ctx context.Context, name string) (User, error)
}

// Files moves files and directory trees in and out of an instance.
type Files interface {
	// Push writes r to the absolute path dst with opts' owner and mode.
	Push(ctx context.Context, dst string, r io.Reader, opts FileOptions) error
	// Pull copies the regular file src into w and returns its metadata.
	Pull(ctx context.Context, src string, w io.Writer) (FileInfo, error)
	// Stat returns the metadata of path (not following a final symlink).
	Stat(ctx context.Context, path string) (FileInfo, error)
	// Mkdir creates dir and its missing parents with opts' owner and mode;
	// an existing directory is not an error.
	Mkdir(ctx context.Context, dir string, opts FileOptions) error
	// PushTree copies the host directory hostDir's contents into dst
	// (created like Mkdir), keeping the permission bits of every file and
	// directory; files and directories get opts' owner.
	PushTree(ctx context.Context, hostDir, dst string, opts FileOptions) error
	// PullTree copies the instance directory src's contents into the host
	// directory hostDir (created when missing), keeping permission bits.
	PullTree(ctx context.Context, src, hostDir string) error
}

// Mounts shares host directories with an instance.
type Mounts interface {
	// Mount makes the host directory source visible in the instance under
	// alias and returns the in-instance path (/data/<hash of alias>).
	// Mounts are reference-counted per alias: every Mount needs an
	// Unmount, and the last Unmount detaches the directory.
	Mount(ctx context.Context, alias, source string, opts MountOptions) (string, error)
	// Unmount releases one Mount of alias (ErrNotMounted when none is held).
	Unmount(ctx context.Context, alias string) error
}

// Cmd is a command to Exec.
type Cmd struct {
	// Args is the command and its arguments; Args[0] is looked up in PATH.
	Args []string
	// Env is added to the backend's default environment.
	Env map[string]string
	// Dir is the working directory; empty means the user's home.
	Dir string
	// User runs the command as this user: empty for root, a user name
	// (resolved in the instance), or a numeric uid ("uid:gid" on Incus).
	User string
	// NoCreateUser makes a named User missing from the instance an error
	// wrapping ErrNotFound. Through the Executor interface a user must
	// exist (EnsureUser makes it) and backends behave as if it were set;
	// package instance, used alone, creates a missing user unless it is.
	NoCreateUser bool
	// Group is the group name or numeric gid; empty means the user's
	// primary group.
	Group string
	// Stdin, Stdout and Stderr are the streams; nil means empty input and
	// discarded output. Stdout and Stderr may be the same writer: backends
	// then serialise the writes to it.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Timeout kills the command after this long (ErrTimeout); zero means
	// no limit beyond ctx.
	Timeout time.Duration
	// KillGrace is how long a command that is being killed (Timeout, ctx)
	// gets between SIGTERM and SIGKILL; zero means the backend's default.
	// Backends that kill at once ignore it.
	KillGrace time.Duration
	// Stream asks for output delivered as it is written (interactive use)
	// rather than the backend's loss-proof default; on Incus it selects
	// the websocket path, which can lose the end of the output when the
	// host is loaded (see package instance, "Exec output"). Backends
	// without the distinction ignore it.
	Stream bool
}

// FileOptions are the owner and mode of pushed files and created
// directories. The zero value is root-owned with mode 0644 for files and
// 0755 for directories.
type FileOptions struct {
	UID, GID int
	// Mode's permission bits (and setuid, setgid, sticky, written as
	// fs.ModeSetuid or as 0o4000); zero means the default above.
	Mode fs.FileMode
	// MkdirAll creates missing parent directories of a pushed file
	// (root-owned, 0755); without it a missing parent is ErrNotFound.
	MkdirAll bool
}

// FileInfo is the metadata of a file in an instance.
type FileInfo struct {
	// Path is the absolute path asked for.
	Path string
	// Mode has the permission bits and the type (fs.ModeDir,
	// fs.ModeSymlink; none for a regular file).
	Mode     fs.FileMode
	UID, GID int
	// Size is the size of a regular file in bytes.
	Size int64
}

// IsDir reports whether the file is a directory.
func (fi FileInfo) IsDir() bool { return fi.Mode.IsDir() }

// User is an account in an instance.
type User struct {
	Name     string
	UID, GID int
	Home     string
}

// MountOptions are the options of a Mount. All holds of one mount share
// them (package mount checks them with mount.ValidateOptions).
type MountOptions struct {
	// ReadOnly makes the directory read-only inside the instance.
	ReadOnly bool
	// Shift maps the source's owners into the instance's user namespace
	// with an idmapped mount, so that root-owned host files are owned by
	// the instance's root rather than by nobody (unprivileged containers
	// only).
	Shift bool
	// Propagation is the bind propagation mode, one of
	// mount.Propagations; empty means "private".
	Propagation string
}

// Stats is a snapshot of an instance's resource usage (Debusine's
// statistics: cpu_count, cpu_time, memory, disk_space, ...). Fields a
// backend cannot know are zero.
type Stats struct {
	CPUs    int
	CPUTime time.Duration
	// Memory and disk in bytes.
	MemoryUsed, MemoryTotal uint64
	DiskUsed, DiskAvailable uint64
	// Processes is the number of processes in the instance (0 from a
	// backend that does not count them, -1 when it could not read them).
	Processes int64
	// Status is the backend's word for the instance's state ("Running",
	// "Stopped", ...), empty when it has none.
	Status string
}

// Result is the outcome of Output.
type Result struct {
	ExitCode       int
	Stdout, Stderr []byte
}

// Output runs cmd in inst and collects whatever output cmd does not send
// elsewhere (cmd.Stdout or cmd.Stderr set are left alone).
func Output(ctx context.Context, inst Instance, cmd Cmd) (Result, error) {
	var stdout, stderr bytes.Buffer
	if cmd.Stdout == nil {
		cmd.Stdout = &stdout
	}
	if cmd.Stderr == nil {
		cmd.Stderr = &stderr
	}
	code, err := inst.Exec(ctx, cmd)
	return Result{ExitCode: code, Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}, err
}

// CheckName returns an error wrapping ErrInvalid unless name is a valid
// instance name: 1-63 letters, digits and hyphens, starting with a letter
// and not ending with a hyphen.
func CheckName(name string) error {
	if name == "" || len(name) > 63 {
		return fmt.Errorf("instance name %q: %w: must be 1-63 characters", name, ErrInvalid)
	}
	for i, c := range name {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case i > 0 && (c >= '0' && c <= '9' || c == '-'):
		default:
			return fmt.Errorf("instance name %q: %w: letters, digits and hyphens, starting with a letter", name, ErrInvalid)
		}
	}
	if strings.HasSuffix(name, "-") {
		return fmt.Errorf("instance name %q: %w: must not end with a hyphen", name, ErrInvalid)
	}
	return nil
}

// CleanPath returns p cleaned, or an error wrapping ErrInvalid unless p is
// an absolute path inside an instance.
func CleanPath(p string) (string, error) {
	if !path.IsAbs(p) || strings.ContainsRune(p, 0) {
		return "", fmt.Errorf("path %q: %w: must be absolute", p, ErrInvalid)
	}
	return path.Clean(p), nil
}
