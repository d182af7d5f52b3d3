package instance_test

import (
	"bytes"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/lxc/incus/v6/shared/api"
	"github.com/matryer/is"
)

const guestOutput = "/var/lib/incusexec/output"

// launchSharing launches a busybox instance with an output directory as
// its device, not yet used.
func launchSharing(t *testing.T, m *instance.Manager) (*instance.Instance, instance.OutputDir) {
	t.Helper()
	dir, err := instance.NewOutputDir(t.TempDir(), guestOutput)
	if err != nil {
		t.Fatal(err)
	}
	in := launch(t, m, instance.Spec{Devices: map[string]map[string]string{"output": dir.Device()}})
	return in, dir
}

// serverRecorded is how many exec-output files the server holds for the
// instance: none when it never recorded any (no directory: 404).
func serverRecorded(t *testing.T, d *incustest.Daemon, name string) int {
	t.Helper()
	resp, _, err := d.Client.RawQuery(http.MethodGet, "/1.0/instances/"+name+"/logs/exec-output", nil, "")
	if api.StatusErrorCheck(err, http.StatusNotFound) {
		return 0
	}
	if err != nil {
		t.Fatalf("list exec-output of %s: %v", name, err)
	}
	var files []string
	if err := resp.MetadataAsStruct(&files); err != nil {
		t.Fatal(err)
	}
	return len(files)
}

// TestExecThroughOutputDir runs the recorded path's cases through an
// output directory: the same results, the server asked to record nothing,
// and the directory empty after each command.
func TestExecThroughOutputDir(t *testing.T) {
	t.Parallel()
	d, m, _ := setup(t, instance.Config{KillGrace: 500 * time.Millisecond})
	in, dir := launchSharing(t, m)
	is.New(t).NoErr(in.UseOutputDir(ctxFor(t, time.Minute), dir))
	empty := func(t *testing.T) {
		is := is.New(t)
		left, err := os.ReadDir(dir.Host)
		is.NoErr(err)
		is.Equal(len(left), 0)                       // each command's files removed
		is.Equal(serverRecorded(t, d, in.Name()), 0) // nothing through the server
	}
	t.Run("endings", func(t *testing.T) { execEndings(t, in, empty) })
	t.Run("stdin", func(t *testing.T) { execStdin(t, in, empty) })
	t.Run("follows", func(t *testing.T) { execFollows(t, in) })
	t.Run("the instance cannot touch the directory", func(t *testing.T) {
		// A command as root in the instance tries to list the directory,
		// replace its own stdout file (by a link to a file of this host,
		// by a FIFO that would block the reader) and leave files behind,
		// and to read its own output back: all refused.
		is := is.New(t)
		secret := filepath.Join(t.TempDir(), "secret")
		is.NoErr(os.WriteFile(secret, []byte("host secret\n"), 0o600))
		script := `f=$(readlink /proc/$$/fd/1); d=${f%/*}
for op in "ls $d" "rm -f $f" "mv $f $d/moved" "ln -s $1 $d/link" "mkfifo $d/fifo" "touch $d/junk" "mkdir $d/junkdir" "cat $f"; do
	$op </dev/null >/dev/null 2>&1 && echo "allowed: $op" >&2
done
echo done`
		var out, errb bytes.Buffer
		code, err := in.Exec(ctxFor(t, time.Minute), executor.Cmd{Args: []string{"sh", "-c", script, "sh", secret}, Stdout: &out, Stderr: &errb})
		is.NoErr(err)
		is.Equal(code, 0)
		is.Equal(errb.String(), "") // nothing allowed
		is.Equal(out.String(), "done\n")
		empty(t)
	})
	t.Run("as a user", func(t *testing.T) {
		is := is.New(t)
		var out bytes.Buffer
		code, err := in.Exec(ctxFor(t, time.Minute), executor.Cmd{Args: []string{"id", "-u"}, User: "4321", Stdout: &out})
		is.NoErr(err)
		is.Equal(code, 0)
		is.Equal(out.String(), "4321\n")
		empty(t)
	})
}

// TestUseOutputDirRefusesUnshared: a directory that is not the instance's
// device is refused by name, and Exec goes on through the server.
func TestUseOutputDirRefusesUnshared(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	d, m, _ := setup(t, instance.Config{})
	in := launch(t, m, instance.Spec{}) // no device
	dir, err := instance.NewOutputDir(t.TempDir(), guestOutput)
	is.NoErr(err)
	err = in.UseOutputDir(ctxFor(t, time.Minute), dir)
	is.True(errors.Is(err, instance.ErrOutputDir))
	is.True(bytes.Contains([]byte(err.Error()), []byte(dir.Host))) // names it
	left, err := os.ReadDir(dir.Host)
	is.NoErr(err)
	is.Equal(len(left), 0) // the trial's files (none written) are gone
	is.Equal(run(t, in, "echo", "still"), "still")
	instance.WaitCleanups(m)
	is.Equal(recordedFiles(t, d, in.Name()), []string{}) // recorded, then removed

	// Bad input is refused before anything runs.
	_, err = instance.NewOutputDir(t.TempDir(), "relative/path")
	is.True(errors.Is(err, instance.ErrInvalid))
	err = in.UseOutputDir(ctxFor(t, time.Minute), instance.OutputDir{Host: filepath.Join(t.TempDir(), "missing"), Guest: guestOutput})
	is.True(errors.Is(err, instance.ErrInvalid))
}

// TestNewOutputDirMode: the shared directory lets others in, not list,
// create or remove, inside a private parent.
func TestNewOutputDirMode(t *testing.T) {
	is := is.New(t)
	dir, err := instance.NewOutputDir(t.TempDir(), guestOutput)
	is.NoErr(err)
	fi, err := os.Stat(dir.Host)
	is.NoErr(err)
	is.Equal(fi.Mode()&(os.ModePerm|os.ModeSticky), os.FileMode(0o711))
	pfi, err := os.Stat(filepath.Dir(dir.Host))
	is.NoErr(err)
	is.Equal(pfi.Mode().Perm(), os.FileMode(0o700))
	is.Equal(dir.Device(), map[string]string{"type": "disk", "source": dir.Host, "path": guestOutput})
}
