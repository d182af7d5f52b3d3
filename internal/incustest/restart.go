package incustest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/lxc/incus/v6/shared/api"
)

// Restart stops incusd with SIGTERM, which leaves the instances running, and
// starts it again on the same directory, as `systemctl restart incus` does on
// a host. d.Client is replaced; clients connected before keep their old
// connections, which is what reconnection tests need.
func (d *Daemon) Restart(ctx context.Context) error {
	return d.relaunch(ctx, syscall.SIGTERM, "restart", nil)
}

// Crash kills incusd with SIGKILL, as a crash or the OOM killer would (its
// instances, bridges and dnsmasq keep running), and starts it again on the
// same directory. Unlike Restart, incusd gets no chance to finish or refuse
// requests in flight: their connections break at once. d.Client is replaced;
// clients connected before keep their (broken) connections.
func (d *Daemon) Crash(ctx context.Context) error {
	return d.relaunch(ctx, syscall.SIGKILL, "crash", nil)
}

// relaunch sends sig to incusd, waits for it to exit (killing it when ctx
// ends first), calls between (when not nil) and starts a new one on the same
// directory.
func (d *Daemon) relaunch(ctx context.Context, sig syscall.Signal, what string, between func() error) error {
	if d.cmd == nil || d.cmd.Process == nil {
		return fmt.Errorf("incustest: %s: daemon not started", what)
	}
	_ = syscall.Kill(d.cmd.Process.Pid, sig)
	select {
	case <-d.exited:
	case <-ctx.Done():
		_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		<-d.exited
		return fmt.Errorf("incustest: %s: incusd did not exit on %s: %w", what, sig, ctx.Err())
	}
	var betweenErr error
	if between != nil {
		// Started again even when between fails: the test's cleanup
		// needs a daemon to empty.
		betweenErr = between()
	}
	if stopping.Load() {
		return fmt.Errorf("incustest: %s: the test binary is stopping its daemons", what)
	}
	if err := d.launch(); err != nil {
		return fmt.Errorf("incustest: %s: %w", what, errors.Join(betweenErr, err))
	}
	old := d.Client
	if err := d.waitReady(ctx, 60*time.Second); err != nil {
		return errors.Join(betweenErr, err)
	}
	if old != nil {
		old.Disconnect()
	}
	if betweenErr != nil {
		return fmt.Errorf("incustest: %s: %w", what, betweenErr)
	}
	return nil
}

// RestartWithBridgeDown restarts incusd as Restart does, but with the
// address of its bridge's DNS service taken meanwhile, so that the bridge's
// dnsmasq, and so its start, fails: incusd then has the network out of
// service (see WaitNetworks) and refuses to start instances on it until a
// start of its own, a minute later, succeeds, which needs release to have
// freed the address first. incusd takes a dnsmasq that exits later than
// half a second after its start for a running one: when the bridge came up
// all the same (a loaded host), the restart is tried again, three times in
// all. release may be called more than once; the test must call it before
// it ends.
func (d *Daemon) RestartWithBridgeDown(ctx context.Context) (release func(), err error) {
	n, _, err := d.Client.GetNetwork(d.Network)
	if err != nil {
		return nil, fmt.Errorf("incustest: bridge %s: %w", d.Network, err)
	}
	ip, _, err := net.ParseCIDR(n.Config["ipv4.address"])
	if err != nil {
		return nil, fmt.Errorf("incustest: bridge %s: address %q: %w", d.Network, n.Config["ipv4.address"], err)
	}
	var mu sync.Mutex
	var held net.PacketConn
	release = func() {
		mu.Lock()
		defer mu.Unlock()
		if held != nil {
			_ = held.Close()
			held = nil
		}
	}
	takeAddress := func() error {
		// dnsmasq outlives incusd: stop it (exit status 1: none was
		// running), then take its address.
		out, err := exec.Command("pkill", "-f", "^dnsmasq .*"+d.Dir+"/").CombinedOutput()
		var exit *exec.ExitError
		if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 1) {
			return fmt.Errorf("stop dnsmasq: %v: %s", err, bytes.TrimSpace(out))
		}
		addr := net.JoinHostPort(ip.String(), "53")
		deadline := time.Now().Add(10 * time.Second)
		for {
			c, err := net.ListenPacket("udp", addr) // free once dnsmasq is gone
			if err == nil {
				mu.Lock()
				held = c
				mu.Unlock()
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("take %s: %w", addr, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	const tries = 3
	for try := 1; ; try++ {
		if err := d.relaunch(ctx, syscall.SIGTERM, "restart with the bridge down", takeAddress); err != nil {
			release()
			return nil, err
		}
		down, err := d.networksDown()
		if err != nil {
			release()
			return nil, err
		}
		if len(down) > 0 {
			return release, nil
		}
		release()
		if try == tries {
			return nil, fmt.Errorf("incustest: incusd started bridge %s %d times with its DNS address taken", d.Network, tries)
		}
	}
}

// networksDown returns incusd's warnings about networks out of service
// (unresolved "Network unavailable" warnings).
func (d *Daemon) networksDown() ([]api.Warning, error) {
	ws, err := d.Client.GetWarnings()
	if err != nil {
		return nil, fmt.Errorf("incustest: warnings: %w", err)
	}
	var down []api.Warning
	for _, w := range ws {
		if w.Type == networkUnavailable && w.Status != "resolved" {
			down = append(down, w)
		}
	}
	return down, nil
}

// networkUnavailable is the type of the warning incusd records for a network
// it failed to start.
const networkUnavailable = "Network unavailable"

// WaitNetworks waits until incusd has all its networks in service. incusd
// starts them before it answers as ready (Restart and Crash wait for that),
// but a network whose start fails then (dnsmasq not coming up, a link
// vanishing while incusd lists them on a busy host) stays out of service:
// incusd refuses to start instances on it ("Network ... unavailable on this
// server"), records a "Network unavailable" warning and tries again a minute
// later, resolving the warning once a start succeeds. WaitNetworks waits for
// no such warning to be left unresolved; logf (when not nil) is told each
// new failure incusd reports. It returns ctx's error with incusd's last
// message when ctx ends first.
func (d *Daemon) WaitNetworks(ctx context.Context, logf func(format string, args ...any)) error {
	seen := map[string]bool{}
	for {
		down, err := d.networksDown()
		if err != nil {
			return err
		}
		var last string
		for _, w := range down {
			last = w.LastMessage
			key := fmt.Sprint(w.UUID, w.Count)
			if logf != nil && !seen[key] {
				seen[key] = true
				logf("incusd: network unavailable (%d times since %s): %s", w.Count, w.FirstSeenAt.Format(time.TimeOnly), w.LastMessage)
			}
		}
		if last == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("incustest: networks out of service: %s: %w", last, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}
