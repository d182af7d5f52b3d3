package instance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"

	"github.com/incusexec/incusexec/executor"
	"github.com/lxc/incus/v6/shared/api"
)

// OutputDir is a directory that this host and an instance share: Host on
// this host is the source of a disk device of the instance, mounted at
// Guest inside it (OutputDir.Device). Told of one (UseOutputDir), Exec
// makes two empty files there for each command, which the command's
// wrapper opens as its stdout and stderr, and reads them from Host,
// instead of asking the server for its recorded output files. They are
// regular files as those are, so nothing is lost however busy the host
// (see "Exec output" in the README); what goes is the two requests per
// command for the files, whose handling in incusd (the instance and its
// pool loaded from the database, the volume mounted, an event sent) also
// delays the next command: back to back, `true` took 17.8 ms through the
// directory against 47.8 ms recorded (BenchmarkExecPaths, busybox,
// 2026-12-01).
//
// It needs the server on this host (reached over its unix socket, not a
// cluster) and a container: the device's source is this host's path.
// The instance can only write into the files Exec made (mode 0622): the
// directory (mode 0711, this host's) lets it neither list, create,
// remove nor rename anything, nor read a file. Host should be a directory
// of its own, removed when the caller is done with the instance.
type OutputDir struct {
	Host  string // absolute path on this host
	Guest string // absolute path in the instance, not under /run, /tmp or /dev (mounted over at boot)
}

// ErrOutputDir: an output directory could not be made, or the instance
// does not write into it (see UseOutputDir); an executor.ErrUnavailable,
// as this machine does not allow it.
var ErrOutputDir = executor.Sentinel("output directory unavailable", executor.ErrUnavailable)

// NewOutputDir makes a new private directory under parent (the system's
// temporary directory when "") to be shared at guest: Host is
// <parent>/incusexec-output-<random>/io, mode 0711 inside a 0700 parent
// that the caller removes (RemoveAll of filepath.Dir(Host)) when done.
func NewOutputDir(parent, guest string) (OutputDir, error) {
	if !path.IsAbs(guest) || path.Clean(guest) != guest || guest == "/" {
		return OutputDir{}, fmt.Errorf("%w: %w: guest path %q: want a clean absolute path other than /", ErrOutputDir, ErrInvalid, guest)
	}
	top, err := os.MkdirTemp(parent, "incusexec-output-")
	if err != nil {
		return OutputDir{}, fmt.Errorf("%w: %w", ErrOutputDir, err)
	}
	host := filepath.Join(top, "io")
	// Chmod after Mkdir: the umask could take bits off.
	if err := os.Mkdir(host, 0o700); err == nil {
		err = os.Chmod(host, 0o711)
	}
	if err != nil {
		_ = os.RemoveAll(top)
		return OutputDir{}, fmt.Errorf("%w: %w", ErrOutputDir, err)
	}
	return OutputDir{Host: host, Guest: guest}, nil
}

// Device returns the disk device that shares d with an instance (for
// Spec.Devices).
func (d OutputDir) Device() map[string]string {
	return map[string]string{"type": "disk", "source": d.Host, "path": d.Guest}
}

// UseOutputDir makes Exec deliver the output of commands through d from
// now on (commands with Cmd.Stream excepted), once a first command
// through it has shown that the instance writes where this host reads:
// the instance must be running with d's device. It returns an error
// wrapping ErrOutputDir, and Exec goes on as before, when it does not.
func (in *Instance) UseOutputDir(ctx context.Context, d OutputDir) error {
	if !filepath.IsAbs(d.Host) || !path.IsAbs(d.Guest) {
		return fmt.Errorf("%w: %w: instance %s: host %q and guest %q must be absolute paths", ErrOutputDir, ErrInvalid, in.name, d.Host, d.Guest)
	}
	if fi, err := os.Stat(d.Host); err != nil || !fi.IsDir() {
		return fmt.Errorf("%w: %w: instance %s: host path %s is not a directory", ErrOutputDir, ErrInvalid, in.name, d.Host)
	}
	raw, ok := in.m.c.(rawAPI)
	if !ok {
		return fmt.Errorf("%w: instance %s: the client has no raw API to run commands through %s", ErrOutputDir, in.name, d.Host)
	}
	req, err := in.execRequest(ctx, executor.Cmd{Args: []string{"true"}})
	if err == nil {
		var code int
		code, err = in.execRecorded(ctx, raw, req, executor.Cmd{}, in.m.cfg.KillGrace, &d)
		if err == nil && code != 0 {
			err = fmt.Errorf("true: exit status %d", code)
		}
	}
	if err != nil {
		return fmt.Errorf("%w: instance %s: trying %s (%s on this host): %w", ErrOutputDir, in.name, d.Guest, d.Host, err)
	}
	in.outMu.Lock()
	in.outDir = &d
	in.outMu.Unlock()
	return nil
}

func (in *Instance) outputDir() *OutputDir {
	in.outMu.Lock()
	defer in.outMu.Unlock()
	return in.outDir
}

// errNotShared says that a command run through an output directory wrote
// nothing there, not even its wrapper's pid line: the directory is not
// the instance's device.
var errNotShared = errors.New("the instance wrote nothing into its files there")

// sharedFiles are one command's output files in an output directory.
type sharedFiles struct {
	host  string // path prefix on this host: add .stdout or .stderr
	guest string // the same in the instance
}

// newSharedFiles makes the two empty files of a command in d, writable
// by everyone (the command's user in the instance is nobody here) and
// readable by this host's user alone.
func newSharedFiles(d *OutputDir) (sharedFiles, error) {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	name := "exec_" + hex.EncodeToString(b)
	f := sharedFiles{host: filepath.Join(d.Host, name), guest: path.Join(d.Guest, name)}
	for _, suffix := range []string{".stdout", ".stderr"} {
		file, err := os.OpenFile(f.host+suffix, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			err = file.Chmod(0o622) // not subject to the umask
			if cerr := file.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			f.remove()
			return sharedFiles{}, fmt.Errorf("%w: %w", ErrOutputDir, err)
		}
	}
	return f, nil
}

// sharedPrefix redirects the wrapper's own stdout and stderr into the
// files named by its first two arguments; the wrapper's script follows
// with the rest of them.
const sharedPrefix = `exec >"$1" 2>"$2"
shift 2
`

// sharedRequest turns a recorded request (recordedRequest) into one whose
// output goes into f: the server records nothing (the command's stdio is
// its /dev/null until the wrapper redirects it).
func sharedRequest(req api.InstanceExecPost, f sharedFiles) api.InstanceExecPost {
	// req.Command is [sh -c SCRIPT sh ARGS...]
	cmd := append([]string{req.Command[0], req.Command[1], sharedPrefix + req.Command[2], req.Command[3], f.guest + ".stdout", f.guest + ".stderr"}, req.Command[4:]...)
	req.Command = cmd
	req.RecordOutput = false
	return req
}

// remove deletes the files.
func (f sharedFiles) remove() {
	_ = os.Remove(f.host + ".stdout")
	_ = os.Remove(f.host + ".stderr")
}
