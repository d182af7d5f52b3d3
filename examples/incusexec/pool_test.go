package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/incusexec/incusexec/instance/warmpool"
	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/matryer/is"
)

// incusexecProcess runs the command line as a separate process (the test
// binary acting as incusexec), as a host's successive runs would.
func incusexecProcess(t *testing.T, d *incustest.Daemon, args ...string) result {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), os.Args[0], append([]string{"--socket", d.Socket}, args...)...)
	cmd.Env = append(os.Environ(), envMain+"=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	r := result{code, out.String(), errb.String()}
	t.Logf("incusexec %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	return r
}

// TestPoolAcrossProcesses: `pool fill` leaves ready instances on the
// server when it exits; each `pool run` (a process of its own) claims a
// different one, runs the command in it and deletes it; an empty pool
// fails with --no-cold and launches a fresh instance without; `pool drain`
// deletes what is left unclaimed.
func TestPoolAcrossProcesses(t *testing.T) {
	t.Parallel() // its own owner: nothing shared with other tests but the daemon
	is := is.New(t)
	d, owner := busybox(t)
	pool := []string{"--name", "cli-pool", "--image", incustest.BusyboxAlias, "--ready", "network"}
	r := incusexecProcess(t, d, append([]string{"--owner", owner, "pool", "fill", "--size", "2"}, pool...)...)
	is.Equal(r.code, 0)
	filled := owned(t, d, owner)
	is.Equal(len(filled), 2) // left on the server after the filler exited
	for _, n := range filled {
		inst, _, err := d.Client.GetInstance(n)
		is.NoErr(err)
		is.Equal(inst.Config[warmpool.LabelState], warmpool.StateReady)
		is.Equal(inst.Status, "Running")
	}

	seen := map[string]bool{}
	for range 2 {
		r := incusexecProcess(t, d, append(append([]string{"--owner", owner, "pool", "run", "--no-cold"}, pool...), "--", "cat", "/etc/hostname")...)
		is.Equal(r.code, 0)
		name := strings.TrimSpace(r.stdout)
		is.True(name == filled[0] || name == filled[1]) // ran in a pool instance
		is.True(!seen[name])                            // a different one each time
		seen[name] = true
	}
	is.Equal(len(owned(t, d, owner)), 0) // each run deleted its instance

	r = incusexecProcess(t, d, append(append([]string{"--owner", owner, "pool", "run", "--no-cold"}, pool...), "--", "true")...)
	is.Equal(r.code, exitFailure)
	is.True(strings.Contains(r.stderr, "empty"))

	r = incusexecProcess(t, d, append(append([]string{"--owner", owner, "pool", "run"}, pool...), "--", "sh", "-c", "exit 3")...)
	is.Equal(r.code, 3) // launched cold, the command's own exit code
	is.Equal(len(owned(t, d, owner)), 0)

	r = incusexecProcess(t, d, append([]string{"--owner", owner, "pool", "fill", "--size", "1"}, pool...)...)
	is.Equal(r.code, 0)
	is.Equal(len(owned(t, d, owner)), 1)
	r = incusexecProcess(t, d, "--owner", owner, "pool", "drain", "--name", "cli-pool")
	is.Equal(r.code, 0)
	is.Equal(len(owned(t, d, owner)), 0)

	for _, bad := range [][]string{
		{"pool"},
		{"pool", "refill"},
		{"pool", "fill", "--image", incustest.BusyboxAlias},
		{"pool", "fill", "--name", "bad name!", "--image", incustest.BusyboxAlias},
		{"pool", "run", "--name", "p", "--image", incustest.BusyboxAlias},
	} {
		r := incusexec(t, t.Context(), d, "", append([]string{"--owner", owner}, bad...)...)
		is.Equal(r.code, exitUsage)
	}
	is.Equal(len(owned(t, d, owner)), 0)
}
