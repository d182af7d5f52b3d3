package execrelay

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/incusexec/incusexec/executor"
)

var (
	// ErrRelay: the caller could not reach the relay, or the relay broke
	// off before the command's end.
	ErrRelay = errors.New("execute relay")
	// ErrInvalid: bad arguments (no RunFunc, no command); it is an
	// executor.ErrInvalid.
	ErrInvalid = executor.Sentinel("invalid argument", executor.ErrInvalid)
)

// StatusFailed is the status the relay answers when it cannot run a
// request at all (autopkgtest reserves 255 for failures of the execute
// command itself).
const StatusFailed = 255

// RunFunc runs one command for the relay: argv in the instance named name,
// with the caller's streams (stdin nil when it is the null device),
// returning the exit status the caller is to exit with.
type RunFunc func(ctx context.Context, name string, argv []string, stdin io.Reader, stdout, stderr io.Writer) int

// relayRequest is what the execute command sends, its stdin, stdout and
// stderr going along as SCM_RIGHTS.
type relayRequest struct {
	Name string   `json:"name"`
	Argv []string `json:"argv"`
}

// maxRelayRequest bounds a request (a command line autopkgtest builds can
// be a long script, never near this).
const maxRelayRequest = 16 << 20

// requestTimeout bounds how long a caller may take to send its request
// once connected: a caller stopped half-way must not hold Close up.
const requestTimeout = 30 * time.Second

// Relay serves commands on a Unix socket (see the package documentation).
type Relay struct {
	run  RunFunc
	log  *slog.Logger
	dir  string
	ln   *net.UnixListener
	done chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	reading map[*net.UnixConn]bool // connections before their request is in: Close closes them
}

// New listens on a new socket in a new private directory under the
// system's temporary directory and runs each request with run.
func New(run RunFunc, log *slog.Logger) (*Relay, error) {
	if run == nil {
		return nil, fmt.Errorf("%w: execrelay.New needs a RunFunc", ErrInvalid)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir, err := os.MkdirTemp("", "incusexec-relay-")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRelay, err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "exec.sock"), Net: "unix"})
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("%w: %w", ErrRelay, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Relay{run: run, log: log, dir: dir, ln: ln, done: make(chan struct{}), ctx: ctx, cancel: cancel, reading: map[*net.UnixConn]bool{}}
	go r.accept()
	return r, nil
}

// Path is the relay's socket, for the callers' arguments.
func (r *Relay) Path() string { return filepath.Join(r.dir, "exec.sock") }

// Close stops accepting, drops the callers still sending their request,
// cancels the commands still running (their callers get the status they
// end with), waits for them and removes the socket's directory.
func (r *Relay) Close() error {
	err := r.ln.Close()
	<-r.done
	r.cancel()
	r.mu.Lock()
	for c := range r.reading {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
	if rerr := os.RemoveAll(r.dir); err == nil {
		err = rerr
	}
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// accept serves connections until the listener is closed. Other accept
// errors (out of descriptors, say) are waited out, as net/http does: the
// socket stays open, so giving up would leave callers hanging.
func (r *Relay) accept() {
	defer close(r.done)
	backoff := 5 * time.Millisecond
	for {
		c, err := r.ln.AcceptUnix()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			r.log.Error("execute relay: accept", "err", err, "retry in", backoff)
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		r.mu.Lock()
		r.reading[c] = true
		r.mu.Unlock()
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer c.Close()
			r.serve(c)
		}()
	}
}

// serve runs one request. Protocol: the caller sends a 4-byte big-endian
// length and the JSON relayRequest, the first bytes carrying its stdin,
// stdout and stderr; the relay answers "STATUS\n" once the command has
// ended and the descriptors are closed. The caller ending its side of the
// connection before that cancels the command.
func (r *Relay) serve(c *net.UnixConn) {
	if err := checkPeer(c); err != nil {
		r.doneReading(c)
		r.log.Warn("execute relay: refused", "err", err)
		return
	}
	c.SetReadDeadline(time.Now().Add(requestTimeout))
	req, files, err := readRelayRequest(c)
	c.SetReadDeadline(time.Time{})
	r.doneReading(c)
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	if err != nil {
		r.log.Warn("execute relay: bad request", "err", err)
		if len(files) == 3 {
			fmt.Fprintf(files[2], "execute relay: %v\n", err)
		}
		fmt.Fprintf(c, "%d\n", StatusFailed)
		return
	}
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	go func() {
		// Nothing more comes from the caller: EOF (or any error) means it
		// went away or gave up.
		var b [1]byte
		c.Read(b[:])
		cancel()
	}()
	var stdin io.Reader
	if !IsDevNull(files[0]) {
		files[0] = pollable(files[0])
		stdin = files[0]
	}
	code := r.run(ctx, req.Name, req.Argv, stdin, files[1], files[2])
	for _, f := range files {
		f.Close()
	}
	files = nil
	if _, err := fmt.Fprintf(c, "%d\n", code); err != nil {
		r.log.Debug("execute relay: caller gone before the status", "argv", req.Argv, "err", err)
	}
}

// pollable reopens a pipe, FIFO or terminal as a new, non-blocking open
// file of the same thing (through /proc/self/fd), so that closing it once
// the command has ended stops a read still waiting on it: a stdin that
// stays open would otherwise keep a goroutine of the relay reading it, and
// taking input meant for the caller's later commands. Regular files end;
// sockets cannot be reopened so; both are kept as they came, as is f
// whenever the reopen fails.
func pollable(f *os.File) *os.File {
	fi, err := f.Stat()
	if err != nil || fi.Mode()&(os.ModeNamedPipe|os.ModeCharDevice) == 0 {
		return f
	}
	fd, err := syscall.Open("/proc/self/fd/"+strconv.Itoa(int(f.Fd())), syscall.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return f
	}
	f.Close()
	return os.NewFile(uintptr(fd), "relayed stdin")
}

// doneReading takes c off the connections Close drops.
func (r *Relay) doneReading(c *net.UnixConn) {
	r.mu.Lock()
	delete(r.reading, c)
	r.mu.Unlock()
}

// checkPeer refuses a process of another user.
func checkPeer(c *net.UnixConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var cred *syscall.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if cerr != nil {
		return cerr
	}
	if int(cred.Uid) != os.Getuid() {
		return fmt.Errorf("peer pid %d is uid %d, not %d", cred.Pid, cred.Uid, os.Getuid())
	}
	return nil
}

// readRelayRequest reads the request and the three descriptors that come
// with it (files is whatever arrived, even on error).
func readRelayRequest(c *net.UnixConn) (req relayRequest, files []*os.File, err error) {
	head := make([]byte, 4)
	oob := make([]byte, syscall.CmsgSpace(3*4))
	n, oobn, _, _, err := c.ReadMsgUnix(head, oob)
	if err != nil {
		return req, nil, err
	}
	files, err = parseRights(oob[:oobn])
	if err != nil {
		return req, files, err
	}
	if len(files) != 3 {
		return req, files, fmt.Errorf("%d file descriptors, want stdin, stdout and stderr", len(files))
	}
	if _, err := io.ReadFull(c, head[n:]); err != nil {
		return req, files, fmt.Errorf("request length: %w", err)
	}
	size := binary.BigEndian.Uint32(head)
	if size > maxRelayRequest {
		return req, files, fmt.Errorf("request of %d bytes", size)
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(c, body); err != nil {
		return req, files, fmt.Errorf("request: %w", err)
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return req, files, fmt.Errorf("request: %w", err)
	}
	if req.Name == "" || len(req.Argv) == 0 {
		return req, files, errors.New("request without instance or command")
	}
	return req, files, nil
}

func parseRights(oob []byte) ([]*os.File, error) {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var files []*os.File
	for _, m := range msgs {
		fds, err := syscall.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			syscall.CloseOnExec(fd)
			files = append(files, os.NewFile(uintptr(fd), "relayed fd "+strconv.Itoa(fd)))
		}
	}
	return files, nil
}

// Execute is the caller's side: it sends argv for the instance name with
// stdin, stdout and stderr to the relay at socket and returns the exit
// status the relay answers. When ctx ends first it ends its side of the
// connection, which cancels the command, and still waits for the status.
// err (wrapping ErrRelay or ErrInvalid) says why there is no status.
func Execute(ctx context.Context, socket, name string, argv []string, stdin, stdout, stderr *os.File) (int, error) {
	if len(argv) == 0 || name == "" {
		return -1, fmt.Errorf("%w: no command or no instance", ErrInvalid)
	}
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		return -1, fmt.Errorf("%w: %w", ErrRelay, err)
	}
	defer c.Close()
	body, err := json.Marshal(relayRequest{Name: name, Argv: argv})
	if err != nil {
		return -1, err
	}
	msg := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
	msg = append(msg, body...)
	rights := syscall.UnixRights(int(stdin.Fd()), int(stdout.Fd()), int(stderr.Fd()))
	n, _, err := c.WriteMsgUnix(msg, rights, nil)
	if err == nil && n < len(msg) {
		_, err = c.Write(msg[n:])
	}
	if err != nil {
		return -1, fmt.Errorf("%w: send to %s: %w", ErrRelay, socket, err)
	}
	stop := context.AfterFunc(ctx, func() { c.CloseWrite() })
	defer stop()
	var code int
	if _, err := fmt.Fscanf(c, "%d\n", &code); err != nil {
		return -1, fmt.Errorf("%w: no exit status from %s: %w", ErrRelay, socket, err)
	}
	return code, nil
}

// IsDevNull reports whether r is a file open on the null device, which
// has nothing to give a command: Execute should get a nil stdin then.
func IsDevNull(r io.Reader) bool {
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
