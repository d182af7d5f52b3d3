package virtserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/matryer/is"
)

// fakeTestbed records what the server asks of it; fail makes the named
// method fail.
type fakeTestbed struct {
	mu      sync.Mutex
	calls   []string
	open    bool
	boot    int
	fail    map[string]error
	runs    [][]string
	execCmd []string
}

func (f *fakeTestbed) record(call string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
	return f.fail[strings.Fields(call)[0]]
}

func (f *fakeTestbed) Open(ctx context.Context) error {
	if err := f.record("Open"); err != nil {
		return err
	}
	f.open = true
	return nil
}
func (f *fakeTestbed) Revert(ctx context.Context) error { return f.record("Revert") }
func (f *fakeTestbed) Close(ctx context.Context) error {
	f.open = false
	return f.record("Close")
}
func (f *fakeTestbed) BootID(ctx context.Context) (string, error) {
	return fmt.Sprint(f.boot), f.record("BootID")
}
func (f *fakeTestbed) Reboot(ctx context.Context, since string, trigger bool) error {
	if err := f.record(fmt.Sprintf("Reboot %s %v", since, trigger)); err != nil {
		return err
	}
	f.boot++
	return nil
}
func (f *fakeTestbed) Run(ctx context.Context, c Command) (int, error) {
	if err := f.record("Run " + c.Args[0]); err != nil {
		return -1, err
	}
	f.runs = append(f.runs, c.Args)
	if c.Args[0] == "mktemp" && c.Stdout != nil {
		io.WriteString(c.Stdout, "/tmp/autopkgtest.abc123\n")
	}
	return 0, nil
}
func (f *fakeTestbed) CopyDown(ctx context.Context, host, tb string, dir bool) error {
	return f.record(fmt.Sprintf("CopyDown %s %s %v", host, tb, dir))
}
func (f *fakeTestbed) CopyUp(ctx context.Context, tb, host string, dir bool) error {
	return f.record(fmt.Sprintf("CopyUp %s %s %v", tb, host, dir))
}
func (f *fakeTestbed) ExecuteCommand() []string { return f.execCmd }
func (f *fakeTestbed) Capabilities() []string {
	return []string{"isolation-container", "suggested-normal-user=debci"}
}

// session runs the server on the given command lines and returns its
// replies (one per line, the greeting first) and Serve's error.
func session(t *testing.T, tb Testbed, lines ...string) ([]string, error) {
	t.Helper()
	var out strings.Builder
	s := &Server{Testbed: tb}
	err := s.Serve(context.Background(), strings.NewReader(strings.Join(lines, "\n")+"\n"), &out)
	return strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n"), err
}

func TestProtocol(t *testing.T) {
	is := is.New(t)
	tb := &fakeTestbed{execCmd: []string{"/usr/bin/incusexec", "--socket=/var/lib/a b/unix.socket", "virt-exec", "avs-1", "--"}}
	replies, err := session(t, tb,
		"capabilities", "open", "capabilities", "print-execute-command",
		"copydown /host/f /tmp/autopkgtest.abc123/f", "copyup /tmp/x/ /host/out%20dir/",
		"revert", "reboot", "reboot prepare-only", "close", "quit")
	is.NoErr(err)
	is.Equal(replies, []string{
		"ok",
		"ok revert revert-full-system root-on-testbed reboot",
		"ok /tmp/autopkgtest.abc123",
		"ok revert revert-full-system root-on-testbed reboot isolation-container suggested-normal-user=debci", // unquoted, as the stock servers print it
		"ok /usr/bin/incusexec,--socket%3D/var/lib/a%20b/unix.socket,virt-exec,avs-1,--",
		"ok", "ok",
		"ok /tmp/autopkgtest.abc123",
		"ok", "ok", "ok", "ok",
	})
	is.Equal(tb.calls, []string{
		"Open", "Run mktemp", "Run chmod",
		"CopyDown /host/f /tmp/autopkgtest.abc123/f false",
		"CopyUp /tmp/x/ /host/out dir/ true",
		"Revert", "Run mkdir", // same scratch path after the revert
		"BootID", "Run sh", "Reboot 0 true", "Run sh", // read the boot before releasing the test
		"BootID", "Run sh", "Reboot 1 false", "Run sh",
		"Close",
	})
	is.Equal(tb.runs[2], []string{"mkdir", "--mode=777", "--parents", "/tmp/autopkgtest.abc123"})
	is.Equal(tb.runs[3][len(tb.runs[3])-1], "/tmp/autopkgtest.abc123") // the scratch directory saved
	is.True(!tb.open)
}

func TestCapabilitiesUnquoteAsAutopkgtest(t *testing.T) {
	is := is.New(t)
	for _, s := range []string{"a,b c", "100%", "/tmp/x y", "é", "k=v"} {
		got, err := url.PathUnescape(quote(s))
		is.NoErr(err)
		is.Equal(got, s)
		is.True(!strings.ContainsAny(quote(s), ", "))
	}
}

func TestProtocolErrors(t *testing.T) {
	tests := []struct {
		name      string
		lines     []string
		fail      map[string]error
		wantErr   error
		wantClose bool // the testbed was opened and must be closed
		last      string
	}{
		{name: "unknown command", lines: []string{"frobnicate"}, wantErr: ErrProtocol},
		{name: "revert when closed", lines: []string{"revert"}, wantErr: ErrProtocol},
		{name: "open twice", lines: []string{"open", "open"}, wantErr: ErrProtocol, wantClose: true},
		{name: "bad escape", lines: []string{"open", "copyup /a%zz /b"}, wantErr: ErrProtocol, wantClose: true},
		{name: "directoryness", lines: []string{"open", "copydown /a/ /b"}, wantErr: ErrProtocol, wantClose: true},
		{name: "reboot argument", lines: []string{"open", "reboot now"}, wantErr: ErrProtocol, wantClose: true},
		{name: "end of input closes", lines: []string{"open"}, wantErr: io.ErrUnexpectedEOF, wantClose: true},
		{name: "revert fails", lines: []string{"open", "revert"}, fail: map[string]error{"Revert": errBoom}, wantErr: errBoom, wantClose: true},
		{name: "open fails, what it made is closed", lines: []string{"open"}, fail: map[string]error{"Open": errBoom}, wantErr: errBoom, wantClose: true},
		{name: "copy failure is reported, not fatal", lines: []string{"open", "copyup /a /b", "quit"},
			fail: map[string]error{"CopyUp": errBoom}, wantClose: true, last: "copy-failed ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			tb := &fakeTestbed{fail: tt.fail}
			replies, err := session(t, tb, tt.lines...)
			if tt.wantErr != nil {
				is.True(errors.Is(err, tt.wantErr))
			} else {
				is.NoErr(err)
			}
			closed := 0
			for _, c := range tb.calls {
				if c == "Close" {
					closed++
				}
			}
			if tt.wantClose {
				is.Equal(closed, 1)
			} else {
				is.Equal(closed, 0)
			}
			if tt.last != "" {
				is.Equal(strings.Join(replies[len(replies)-2:], " "), tt.last)
			}
		})
	}
}

var errBoom = errors.New("boom")

func TestCancelClosesTestbed(t *testing.T) {
	is := is.New(t)
	tb := &fakeTestbed{}
	pr, pw := io.Pipe()
	defer pw.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	var out safeBuilder
	go func() { done <- (&Server{Testbed: tb}).Serve(ctx, pr, &out) }()
	io.WriteString(pw, "open\n")
	for !strings.Contains(out.String(), "/tmp/autopkgtest") {
		// the reply to open says it is open
		out.wait()
	}
	cancel() // SIGTERM in the binary
	err := <-done
	is.True(errors.Is(err, context.Canceled))
	is.Equal(tb.calls[len(tb.calls)-1], "Close")
}

type safeBuilder struct {
	mu sync.Mutex
	b  strings.Builder
	ch chan struct{}
}

func (s *safeBuilder) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
	return s.b.Write(p)
}
func (s *safeBuilder) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }
func (s *safeBuilder) wait() {
	s.mu.Lock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	ch := s.ch
	s.mu.Unlock()
	<-ch
}

func FuzzServe(f *testing.F) {
	f.Add("open\ncopydown /a /b\nrevert\nreboot prepare-only\nclose\nquit\n")
	f.Add("capabilities\nopen\nprint-execute-command\ncopyup%20 /x/ /y/\n")
	f.Add("open\nshell%00 /tmp\n%ff\n")
	f.Fuzz(func(t *testing.T, input string) {
		tb := &fakeTestbed{}
		var out strings.Builder
		s := &Server{Testbed: tb, TTY: func() (io.ReadWriteCloser, error) { return nil, errBoom }}
		s.Serve(context.Background(), strings.NewReader(input), &out)
		if tb.open {
			t.Fatalf("testbed left open after %q", input)
		}
		for _, line := range strings.Split(out.String(), "\n") {
			if line != "" && !strings.HasPrefix(line, "ok") && line != "copy-failed" {
				t.Fatalf("reply %q", line)
			}
		}
	})
}
