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

// Instance is one container or VM. Every method takes a context and honours
// its cancellation; all are safe for concurrent use. After Delete, every
// method except Stop and Delete (which return nil) fails with ErrNotFound.
type Instance interface {
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

	// Exec runs cmd in the running instance and returns its exit code once
	// the process has exited and its output is drained. A non-zero exit
	// is not an error; err is for failures to run it (ErrNotRunning,
	// ErrNotFound for an unknown user, ErrTimeout when cmd.Timeout runs
	// out, ctx's error when ctx ends; the process is killed in both).
	// A command that does not exist exits with 127.
	Exec(ctx context.Context, cmd Cmd) (exitCode int, err error)

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

	// CreateUser creates an unprivileged user and its group, both named
	// name, with a home directory (Debusine's "_debusine"); an existing
	// user is returned as is.
	CreateUser(ctx context.Context, name string) (User, error)

	// Mount makes the host directory source visible in the instance under
	// alias and returns the in-instance path (/data/<hash of alias>).
	// Mounts are reference-counted per alias: every Mount needs an
	// Unmount, and the last Unmount detaches the directory.
	Mount(ctx context.Context, alias, source string, opts MountOptions) (string, error)
	// Unmount releases one Mount of alias (ErrNotMounted when none is held).
	Unmount(ctx context.Context, alias string) error

	// Stats returns the instance's resource usage.
	Stats(ctx context.Context) (Stats, error)
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
	// (resolved in the instance), or a numeric uid.
	User string
	// Group is the group name or numeric gid; empty means the user's
	// primary group.
	Group string
	// Stdin, Stdout and Stderr are the streams; nil means empty input and
	// discarded output. Stdout and Stderr must be distinct writers.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Timeout kills the command after this long (ErrTimeout); zero means
	// no limit beyond ctx.
	Timeout time.Duration
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
	// Mode's permission bits; zero means the default above.
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

// MountOptions are the options of a Mount.
type MountOptions struct {
	// ReadOnly makes the directory read-only inside the instance.
	ReadOnly bool
	// Shift maps ownership for unprivileged containers (idmapped mount).
	Shift bool
	// Propagation is the bind propagation mode ("private", "rslave", ...);
	// empty means the backend's default.
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
