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

// Crash kills incusd with SIGKILL, as a crash or the OOM killer would (its
// instances, bridges and dnsmasq keep running), and starts it again on the
// same directory. Unlike Restart, incusd gets no chance to finish or refuse
// requests in flight: their connections break at once. d.Client is replaced;
// clients connected before keep their (broken) connections.
func (d *Daemon) Crash(ctx context.Context) error {
	if d.cmd == nil || d.cmd.Process == nil {
		return fmt.Errorf("incustest: crash: daemon not started")
	}
	_ = syscall.Kill(d.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-d.exited:
	case <-ctx.Done():
		return fmt.Errorf("incustest: crash: incusd did not die: %w", ctx.Err())
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
		return fmt.Errorf("incustest: crash: restart %s: %w", IncusdPath, err)
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
