package incustest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Every cluster member runs in a "machine" of its own: a network namespace
// (so that each member can create the cluster's bridge under the same name
// with the same address, as real hosts do) and a mount namespace (so that
// /sys/class/net, which incusd reads, shows that network namespace). A small
// holder process keeps both namespaces alive while the member's incusd is
// stopped and restarted.
//
// Members reach each other at 127.0.0.2, .3, .4 port 8443: inside member i's
// namespace its own address is incusd's listener and every peer address is a
// relay that this process runs, whose far end is a socket created inside the
// peer's namespace. Relays on the host's loopback give this process (and the
// HTTPS client) the same view.

// holderScript brings up loopback and mounts a sysfs of the new network
// namespace over /sys (which incusd reads to find interfaces), moving the
// cgroup mounts onto it. Mounting sysfs over /sys as a whole, rather than
// over its network directories only, keeps it "fully visible", without which
// the kernel refuses containers their own sysfs. The holder then waits for
// its stdin to close.
const holderScript = `set -e
ip link set lo up
c=$(mktemp -d)
mount --rbind /sys/fs/cgroup "$c"
mount -t sysfs sysfs /sys
mount --move "$c" /sys/fs/cgroup
rmdir "$c"
echo ready
read -r _ || true
`

// machine is a holder process with its namespaces and a thread inside its
// network namespace.
type machine struct {
	holder *exec.Cmd
	stdin  io.WriteCloser
	exited chan struct{}
	thread *nsThread

	closeOnce sync.Once
}

// startMachine starts a holder whose command line names dir, so that a
// leftover holder shows up in the leak check.
func startMachine(ctx context.Context, dir string) (*machine, error) {
	cmd := exec.Command("unshare", "--net", "--mount", "--propagation", "private", "--", "sh", "-c", holderScript, dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start namespace holder for %s: %w", dir, err)
	}
	m := &machine{holder: cmd, stdin: stdin, exited: make(chan struct{})}
	ready := make(chan error, 1)
	go func() {
		b := make([]byte, 6)
		_, err := io.ReadFull(stdout, b)
		if err == nil && string(b) != "ready\n" {
			err = fmt.Errorf("unexpected output %q", b)
		}
		ready <- err
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() { _ = cmd.Wait(); close(m.exited) }()
	select {
	case err = <-ready:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err == nil {
		m.thread, err = enterNetns(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid))
	}
	if err != nil {
		m.close()
		return nil, fmt.Errorf("namespaces for %s: %w (%s)", dir, err, stderr.String())
	}
	return m, nil
}

// close ends the holder; the namespaces go once no process is left in them.
func (m *machine) close() { m.closeOnce.Do(m.closeNow) }

func (m *machine) closeNow() {
	if m.thread != nil {
		m.thread.close()
	}
	_ = m.stdin.Close()
	select {
	case <-m.exited:
	case <-time.After(10 * time.Second):
		_ = m.holder.Process.Kill()
		<-m.exited
	}
}

// nsThread is a goroutine locked to an OS thread that joined a network
// namespace; sockets created by functions it runs belong to that namespace.
type nsThread struct {
	reqs      chan func()
	quit      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

var errNamespaceGone = errors.New("incustest: the member's namespace is gone")

func enterNetns(path string) (*nsThread, error) {
	t := &nsThread{reqs: make(chan func()), quit: make(chan struct{}), done: make(chan struct{})}
	entered := make(chan error, 1)
	go func() {
		defer close(t.done)
		// Never unlocked: a thread that left the process's namespace must
		// end with this goroutine rather than go back to the scheduler.
		runtime.LockOSThread()
		f, err := os.Open(path)
		if err != nil {
			entered <- err
			return
		}
		err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
		f.Close()
		if err != nil {
			entered <- fmt.Errorf("setns %s: %w", path, err)
			return
		}
		entered <- nil
		for {
			select {
			case fn := <-t.reqs:
				fn()
			case <-t.quit:
				return
			}
		}
	}()
	if err := <-entered; err != nil {
		return nil, err
	}
	return t, nil
}

// do runs fn inside the namespace.
func (t *nsThread) do(fn func()) error {
	finished := make(chan struct{})
	select {
	case t.reqs <- func() { defer close(finished); fn() }:
		<-finished
		return nil
	case <-t.done:
		return errNamespaceGone
	}
}

func (t *nsThread) close() {
	t.closeOnce.Do(func() { close(t.quit) })
	<-t.done
}

func (t *nsThread) dial(ctx context.Context, network, address string) (c net.Conn, err error) {
	if gone := t.do(func() {
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err = d.DialContext(ctx, network, address)
	}); gone != nil {
		return nil, gone
	}
	return c, err
}

func (t *nsThread) listen(address string) (l net.Listener, err error) {
	if gone := t.do(func() { l, err = net.Listen("tcp", address) }); gone != nil {
		return nil, gone
	}
	return l, err
}

func (t *nsThread) interfaces() (ifs []net.Interface, err error) {
	if gone := t.do(func() { ifs, err = net.Interfaces() }); gone != nil {
		return nil, gone
	}
	return ifs, err
}

// relay forwards every connection accepted on ln to a connection from dial.
type relay struct {
	ln   net.Listener
	dial func() (net.Conn, error)

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

func startRelay(ln net.Listener, dial func() (net.Conn, error)) *relay {
	r := &relay{ln: ln, dial: dial, conns: map[net.Conn]struct{}{}}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.wg.Add(1)
			go func() { defer r.wg.Done(); r.pipe(c) }()
		}
	}()
	return r
}

func (r *relay) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.conns[c] = struct{}{}
	return true
}

func (r *relay) untrack(c net.Conn) {
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
	c.Close()
}

func (r *relay) pipe(a net.Conn) {
	if !r.track(a) {
		a.Close()
		return
	}
	defer r.untrack(a)
	b, err := r.dial()
	if err != nil {
		// The member is down: the peer sees the connection close, as it
		// would see it refused by a host whose daemon is stopped.
		return
	}
	if !r.track(b) {
		b.Close()
		return
	}
	defer r.untrack(b)
	copied := make(chan struct{})
	go func() { defer close(copied); copyHalf(b, a) }()
	copyHalf(a, b)
	<-copied
}

// copyHalf copies until EOF and passes the EOF on, keeping the other
// direction open (TLS close_notify and HTTP bodies rely on half-closes).
func copyHalf(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	} else {
		dst.Close()
	}
}

func (r *relay) close() {
	r.ln.Close()
	r.mu.Lock()
	r.closed = true
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// listenHost binds the host-side relay addresses: 127.0.0.2, .3, ... port
// 8443 when free, else the same hosts on 127.0.k.x, else ephemeral ports.
func listenHost(n int) ([]net.Listener, error) {
	try := func(addr func(i int) string) ([]net.Listener, error) {
		var ls []net.Listener
		for i := range n {
			l, err := net.Listen("tcp", addr(i))
			if err != nil {
				for _, l := range ls {
					l.Close()
				}
				return nil, err
			}
			ls = append(ls, l)
		}
		return ls, nil
	}
	var errs []error
	for k := range 16 {
		ls, err := try(func(i int) string { return net.JoinHostPort(fmt.Sprintf("127.0.%d.%d", k, 2+i), "8443") })
		if err == nil {
			return ls, nil
		}
		errs = append(errs, err)
	}
	ls, err := try(func(i int) string { return net.JoinHostPort("127.0.0."+strconv.Itoa(2+i), "0") })
	if err == nil {
		return ls, nil
	}
	return nil, fmt.Errorf("incustest: no loopback addresses for the cluster's relays: %w", errors.Join(append(errs, err)...))
}

type lockedBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	return len(p), nil
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}
