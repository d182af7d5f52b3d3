package incustest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Restart stops incusd with SIGTERM, which leaves the instances running, and
// starts it again on the same directory, as `systemctl restart incus` does on
// a host. d.Client is replaced; clients connected before keep their old
// connections, which is what reconnection tests need.
func (d *Daemon) Restart(ctx context.Context) error {
	if d.cmd == nil || d.cmd.Process == nil {
		return fmt.Errorf("incustest: restart: daemon not started")
	}
	_ = syscall.Kill(d.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-ctx.Done():
		_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		<-d.exited
		return fmt.Errorf("incustest: restart: incusd did not exit on SIGTERM: %w", ctx.Err())
	}
	logFile, err := os.OpenFile(filepath.Join(d.Dir, "incusd.log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(IncusdPath, "--group", "root")
	cmd.Env = append(os.Environ(), "INCUS_DIR="+d.Dir)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("incustest: restart %s: %w", IncusdPath, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	d.cmd, d.exited = cmd, exited
	old := d.Client
	if err := d.waitReady(ctx, 60*time.Second); err != nil {
		return err
	}
	if old != nil {
		old.Disconnect()
	}
	return nil
}
