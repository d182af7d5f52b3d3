package execrelay_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/instance/virtserver/execrelay"
	"github.com/matryer/is"
)

// TestIsDevNull: only the null device counts as "no input" for the
// execute command; files, pipes and in-memory readers keep their stdin.
func TestIsDevNull(t *testing.T) {
	is := is.New(t)
	null, err := os.Open(os.DevNull)
	is.NoErr(err)
	defer null.Close()
	is.True(execrelay.IsDevNull(null))

	file, err := os.CreateTemp(t.TempDir(), "stdin")
	is.NoErr(err)
	defer file.Close()
	is.True(!execrelay.IsDevNull(file))

	r, w, err := os.Pipe()
	is.NoErr(err)
	defer r.Close()
	defer w.Close()
	is.True(!execrelay.IsDevNull(r))

	zero, err := os.Open("/dev/zero") // a character device, not the null one
	is.NoErr(err)
	defer zero.Close()
	is.True(!execrelay.IsDevNull(zero))

	is.True(!execrelay.IsDevNull(strings.NewReader("")))
	is.True(!execrelay.IsDevNull(nil))
}

// streams are the execute command's stdin, stdout and stderr as files,
// with what the relay wrote to the outputs.
type streams struct {
	in, out, err *os.File
	outPath      string
	errPath      string
}

func newStreams(t *testing.T, stdin string) *streams {
	t.Helper()
	dir := t.TempDir()
	s := &streams{outPath: filepath.Join(dir, "out"), errPath: filepath.Join(dir, "err")}
	var err error
	if stdin == "" {
		s.in, err = os.Open(os.DevNull)
	} else {
		p := filepath.Join(dir, "in")
		if err = os.WriteFile(p, []byte(stdin), 0o600); err == nil {
			s.in, err = os.Open(p)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	if s.out, err = os.Create(s.outPath); err != nil {
		t.Fatal(err)
	}
	if s.err, err = os.Create(s.errPath); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.in.Close(); s.out.Close(); s.err.Close() })
	return s
}

func (s *streams) read(t *testing.T) (string, string) {
	t.Helper()
	o, err := os.ReadFile(s.outPath)
	if err != nil {
		t.Fatal(err)
	}
	e, err := os.ReadFile(s.errPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(o), string(e)
}

// TestRelayRunsWithTheCallersStreams: the command, the instance name and
// the caller's own descriptors reach the RunFunc (stdin nil for the null
// device), and its status comes back unchanged; several run at once.
func TestRelayRunsWithTheCallersStreams(t *testing.T) {
	is := is.New(t)
	r, err := execrelay.New(func(ctx context.Context, name string, argv []string, stdin io.Reader, stdout, stderr io.Writer) int {
		in := "<nil>"
		if stdin != nil {
			b, _ := io.ReadAll(stdin)
			in = string(b)
		}
		fmt.Fprintf(stdout, "%s %q stdin=%s", name, argv, in)
		fmt.Fprint(stderr, "to stderr")
		var code int
		fmt.Sscan(argv[len(argv)-1], &code)
		return code
	}, nil)
	is.NoErr(err)
	defer r.Close()
	fi, err := os.Stat(filepath.Dir(r.Path()))
	is.NoErr(err)
	is.Equal(fi.Mode().Perm(), os.FileMode(0o700)) // only this user reaches the socket

	var wg sync.WaitGroup
	for i, stdin := range []string{"", "input", "", "more input"} {
		wg.Go(func() {
			is := is.New(t)
			s := newStreams(t, stdin)
			code, err := execrelay.Execute(context.Background(), r.Path(), "avs-1", []string{"sh", "-c", "x", fmt.Sprint(i * 40)}, s.in, s.out, s.err)
			is.NoErr(err)
			is.Equal(code, i*40)
			out, errOut := s.read(t)
			want := "<nil>"
			if stdin != "" {
				want = stdin
			}
			is.Equal(out, fmt.Sprintf("avs-1 %q stdin=%s", []string{"sh", "-c", "x", fmt.Sprint(i * 40)}, want))
			is.Equal(errOut, "to stderr")
		})
	}
	wg.Wait()
}

// TestRelayCallerGivingUpCancelsTheCommand: the caller's context ending
// cancels the command on the relay's side, and the caller still gets the
// status the command ended with.
func TestRelayCallerGivingUpCancelsTheCommand(t *testing.T) {
	is := is.New(t)
	started := make(chan struct{})
	r, err := execrelay.New(func(ctx context.Context, name string, argv []string, stdin io.Reader, stdout, stderr io.Writer) int {
		close(started)
		select {
		case <-ctx.Done():
			fmt.Fprint(stderr, "cancelled")
			return 143
		case <-time.After(time.Minute):
			return 0
		}
	}, nil)
	is.NoErr(err)
	defer r.Close()
	s := newStreams(t, "")
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-started; cancel() }()
	t0 := time.Now()
	code, err := execrelay.Execute(ctx, r.Path(), "avs-1", []string{"sleep", "60"}, s.in, s.out, s.err)
	is.NoErr(err)
	is.Equal(code, 143)
	is.True(time.Since(t0) < 30*time.Second)
	_, errOut := s.read(t)
	is.Equal(errOut, "cancelled")
}

// TestRelayCloseCancelsAndRemoves: Close ends the commands still running
// and removes the socket's directory; a later execute command fails with
// the execute command's own status, naming the socket.
func TestRelayCloseCancelsAndRemoves(t *testing.T) {
	is := is.New(t)
	started := make(chan struct{})
	var cancelled bool
	r, err := execrelay.New(func(ctx context.Context, name string, argv []string, stdin io.Reader, stdout, stderr io.Writer) int {
		close(started)
		<-ctx.Done()
		cancelled = true
		return 137
	}, nil)
	is.NoErr(err)
	s := newStreams(t, "")
	done := make(chan int)
	go func() {
		code, _ := execrelay.Execute(context.Background(), r.Path(), "avs-1", []string{"sleep", "60"}, s.in, s.out, s.err)
		done <- code
	}()
	<-started
	is.NoErr(r.Close())
	is.True(cancelled)
	is.Equal(<-done, 137)
	_, err = os.Stat(filepath.Dir(r.Path()))
	is.True(errors.Is(err, os.ErrNotExist))

	s2 := newStreams(t, "")
	_, err = execrelay.Execute(context.Background(), r.Path(), "avs-1", []string{"true"}, s2.in, s2.out, s2.err)
	is.True(errors.Is(err, execrelay.ErrRelay))
	is.True(strings.Contains(err.Error(), r.Path()))
}

// TestRelayRefusesBadRequests: Execute refuses a request without a
// command or instance before connecting; the relay answers StatusFailed,
// without a RunFunc call, to a request that comes without the three
// descriptors or without a command.
func TestRelayRefusesBadRequests(t *testing.T) {
	is := is.New(t)
	var calls atomic.Int32
	r, err := execrelay.New(func(context.Context, string, []string, io.Reader, io.Writer, io.Writer) int {
		calls.Add(1)
		return 0
	}, nil)
	is.NoErr(err)
	defer r.Close()
	s := newStreams(t, "")
	_, err = execrelay.Execute(context.Background(), r.Path(), "avs-1", nil, s.in, s.out, s.err)
	is.True(errors.Is(err, execrelay.ErrInvalid))
	is.True(errors.Is(err, executor.ErrInvalid)) // the one vocabulary
	_, err = execrelay.Execute(context.Background(), r.Path(), "", []string{"true"}, s.in, s.out, s.err)
	is.True(errors.Is(err, execrelay.ErrInvalid))

	raw := func(body string, fds bool) string {
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: r.Path(), Net: "unix"})
		is.NoErr(err)
		defer c.Close()
		msg := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
		msg = append(msg, body...)
		var oob []byte
		if fds {
			oob = syscall.UnixRights(int(s.in.Fd()), int(s.out.Fd()), int(s.err.Fd()))
		}
		_, _, err = c.WriteMsgUnix(msg, oob, nil)
		is.NoErr(err)
		b, _ := io.ReadAll(c)
		return string(b)
	}
	is.Equal(raw(`{"name":"avs-1","argv":["true"]}`, false), "255\n") // no descriptors
	is.Equal(raw(`{"name":"avs-1","argv":[]}`, true), "255\n")        // no command
	is.Equal(raw(`not json`, true), "255\n")
	is.Equal(calls.Load(), int32(0))
	_, errOut := s.read(t)
	is.True(strings.Contains(errOut, "execute relay: request without instance or command")) // on the caller's stderr

	_, err = execrelay.New(nil, nil)
	is.True(errors.Is(err, execrelay.ErrInvalid))
}

// TestRelayCloseDropsStalledCallers: a caller that connects and sends
// nothing does not hold Close up.
func TestRelayCloseDropsStalledCallers(t *testing.T) {
	is := is.New(t)
	r, err := execrelay.New(func(context.Context, string, []string, io.Reader, io.Writer, io.Writer) int { return 0 }, nil)
	is.NoErr(err)
	c, err := net.Dial("unix", r.Path())
	is.NoErr(err)
	defer c.Close()
	time.Sleep(100 * time.Millisecond) // accepted, reading its request
	done := make(chan error)
	go func() { done <- r.Close() }()
	select {
	case err := <-done:
		is.NoErr(err)
	case <-time.After(10 * time.Second):
		t.Fatal("Close waits for a caller that never sends its request")
	}
}

// TestRelayStdinLeftOpenIsReleased: a stdin pipe the caller keeps open
// (a terminal, a parent's pipe) is released once the command has ended: a
// read the command left waiting on it ends, and later input stays for
// whoever reads it next.
func TestRelayStdinLeftOpenIsReleased(t *testing.T) {
	is := is.New(t)
	readDone := make(chan error, 1)
	r, err := execrelay.New(func(ctx context.Context, name string, argv []string, stdin io.Reader, stdout, stderr io.Writer) int {
		reading := make(chan struct{})
		go func() { // a feeder still reading when the command ends
			b := make([]byte, 1)
			_, err := stdin.Read(b) // the byte written before
			close(reading)
			if err == nil {
				_, err = io.Copy(io.Discard, stdin)
			}
			readDone <- err
		}()
		<-reading
		time.Sleep(100 * time.Millisecond) // blocked in its next read
		return 0
	}, nil)
	is.NoErr(err)
	defer r.Close()
	pr, pw, err := os.Pipe()
	is.NoErr(err)
	defer pr.Close()
	defer pw.Close()
	_, err = pw.Write([]byte("x"))
	is.NoErr(err)
	s := newStreams(t, "")
	code, err := execrelay.Execute(context.Background(), r.Path(), "avs-1", []string{"cat"}, pr, s.out, s.err)
	is.NoErr(err)
	is.Equal(code, 0)
	select {
	case <-readDone:
	case <-time.After(5 * time.Second):
		t.Fatal("the relay still reads the caller's stdin after the command")
	}
	_, err = pw.Write([]byte("for the next reader\n"))
	is.NoErr(err)
	b := make([]byte, 64)
	n, err := pr.Read(b)
	is.NoErr(err)
	is.Equal(string(b[:n]), "for the next reader\n")
}
