package incustest

import (
	"context"
	"fmt"
	"syscall"
	"time"
)

// Restart stops incusd with SIGTERM, which leaves the instances running, and
// starts it again on the same directory, as `systemctl restart incus` does on
// a host. d.Client is replaced; clients connected before keep their old
// connections, which is what reconnection tests need.
func (d *Daemon) Restart(ctx context.Context) error {
	return d.relaunch(ctx, syscall.SIGTERM, "restart")
}

// Crash kills incusd with SIGKILL, as a crash or the OOM killer would (its
// instances, bridges and dnsmasq keep running), and starts it again on the
// same directory. Unlike Restart, incusd gets no chance to finish or refuse
// requests in flight: their connections break at once. d.Client is replaced;
// clients connected before keep their (broken) connections.
func (d *Daemon) Crash(ctx context.Context) error {
	return d.relaunch(ctx, syscall.SIGKILL, "crash")
}

// relaunch sends sig to incusd, waits for it to exit (killing it when ctx
// ends first) and starts a new one on the same directory.
func (d *Daemon) relaunch(ctx context.Context, sig syscall.Signal, what string) error {
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
	if err := d.launch(); err != nil {
		return fmt.Errorf("incustest: %s: %w", what, err)
	}
	old := d.Client
	if err := d.waitReady(ctx, 60*time.Second); err != nil {
		return err
	}
	if old != nil {
		old.Disconnect()
	}
	return nil
}
