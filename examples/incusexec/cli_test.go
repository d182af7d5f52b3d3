package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/imagebuild"
	"github.com/incusexec/incusexec/imagebuild/imagetest"
	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/incusexec/incusexec/mount"
)

// owned returns the names of the instances labelled with owner.
func owned(t *testing.T, d *incustest.Daemon, owner string) []string {
	t.Helper()
	insts, err := d.Client.GetInstancesWithFilter("", []string{"config." + executor.OwnerKey + "=" + owner})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, in := range insts {
		names = append(names, in.Name)
	}
	return names
}

// busybox returns the daemon with the busybox image and a fresh owner.
func busybox(t *testing.T) (*incustest.Daemon, string) {
	d := incustest.Shared(t)
	d.BusyboxImage(t)
	return d, incustest.UniqueName("cli")
}

func TestRunStreamsAndExitCode(t *testing.T) {
	t.Parallel() // its own owner: nothing shared with other tests but the daemon
	is := is.New(t)
	d, owner := busybox(t)
	r := incusexec(t, t.Context(), d, "from stdin\n", "--owner", owner, "run", "--image", incustest.BusyboxAlias,
		"--env", "GREETING=hi there", "--", "sh", "-c", `echo "$GREETING"; cat; echo oops >&2; exit 7`)
	is.Equal(r.code, 7)
	is.Equal(r.stdout, "hi there\nfrom stdin\n")
	is.Equal(r.stderr, "oops\n")
	is.Equal(len(owned(t, d, owner)), 0) // the ephemeral instance is gone
}

func TestRunPushMountUserPull(t *testing.T) {
	t.Parallel() // its own owner: nothing shared with other tests but the daemon
	is := is.New(t)
	d, owner := busybox(t)
	host := t.TempDir()
	src := filepath.Join(host, "src")
	is.NoErr(os.MkdirAll(filepath.Join(src, "sub"), 0o755))
	is.NoErr(os.WriteFile(filepath.Join(src, "sub", "in.txt"), []byte("input\n"), 0o644))
	shared := filepath.Join(host, "shared")
	is.NoErr(os.Mkdir(shared, 0o777))
	is.NoErr(os.Chmod(shared, 0o777))
	is.NoErr(os.WriteFile(filepath.Join(shared, "data.txt"), []byte("shared data\n"), 0o644))
	out := filepath.Join(host, "out")
	data := mount.Path("test/shared")
	r := incusexec(t, t.Context(), d, "", "--owner", owner, "run", "--image", incustest.BusyboxAlias,
		"--mount", "test/shared="+shared+":ro", "--push", src+":/srv/src", "--user", "builder", "--cwd", "/srv",
		"--pull", "/srv/src/result:"+out,
		"--", "sh", "-c", "id -un; pwd; mkdir src/result && cat src/sub/in.txt "+data+"/data.txt > src/result/out.txt; touch "+data+"/x || echo read-only")
	is.Equal(r.code, 0)
	is.Equal(r.stdout, "builder\n/srv\nread-only\n")
	got, err := os.ReadFile(filepath.Join(out, "out.txt"))
	is.NoErr(err)
	is.Equal(string(got), "input\nshared data\n")
	_, err = os.Stat(filepath.Join(shared, "x"))
	is.True(os.IsNotExist(err))
	is.Equal(len(owned(t, d, owner)), 0)
}

func TestRunTimeout(t *testing.T) {
	t.Parallel() // its own owner: nothing shared with other tests but the daemon
	is := is.New(t)
	d, owner := busybox(t)
	r := incusexec(t, t.Context(), d, "", "--owner", owner, "run", "--image", incustest.BusyboxAlias, "--timeout", "1s", "--", "sleep", "600")
	is.Equal(r.code, exitTimeout)
	is.True(strings.Contains(r.stderr, "timed out"))
	is.Equal(len(owned(t, d, owner)), 0)
}

func TestRunExecutorFailures(t *testing.T) {
	t.Parallel() // its own owner: nothing shared with other tests but the daemon
	d, owner := busybox(t)
	for _, tc := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"missing image", []string{"run", "--image", "no/such-image", "--", "true"}, exitFailure, "no/such-image"},
		{"missing profile", []string{"run", "--image", incustest.BusyboxAlias, "--profile", "no-such-profile", "--", "true"}, exitFailure, "no-such-profile"},
		{"mount source missing", []string{"run", "--image", incustest.BusyboxAlias, "--mount", "a=/nonexistent-incusexec", "--", "true"}, exitFailure, "/nonexistent-incusexec"},
		{"no command", []string{"run", "--image", incustest.BusyboxAlias}, exitUsage, "no command"},
		{"bad env", []string{"run", "--image", incustest.BusyboxAlias, "--env", "novalue", "--", "true"}, exitUsage, "novalue"},
		{"command not found", []string{"run", "--image", incustest.BusyboxAlias, "--", "no-such-command"}, 127, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			r := incusexec(t, t.Context(), d, "", append([]string{"--owner", owner}, tc.args...)...)
			is.Equal(r.code, tc.code)
			is.True(strings.Contains(r.stderr, tc.msg))
			is.Equal(len(owned(t, d, owner)), 0)
		})
	}
}

// TestRunInterrupted sends SIGINT to a real incusexec process while its
// command runs: it must exit 130 and leave no instance.
func TestRunInterrupted(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			is := is.New(t)
			d, owner := busybox(t)
			cmd := exec.CommandContext(t.Context(), os.Args[0], "--socket", d.Socket, "--owner", owner,
				"run", "--image", incustest.BusyboxAlias, "--", "sh", "-c", "echo started; exec sleep 600")
			cmd.Env = append(os.Environ(), envMain+"=1")
			stdout, err := cmd.StdoutPipe()
			is.NoErr(err)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			is.NoErr(cmd.Start())
			buf := make([]byte, len("started\n"))
			_, err = stdout.Read(buf)
			is.NoErr(err)
			is.Equal(string(buf), "started\n")
			is.Equal(len(owned(t, d, owner)), 1)
			is.NoErr(cmd.Process.Signal(sig))
			err = cmd.Wait()
			t.Logf("stderr: %s", stderr.String())
			is.Equal(cmd.ProcessState.ExitCode(), exitInterrupted)
			is.Equal(len(owned(t, d, owner)), 0)
		})
	}
}

// TestRunKeep leaves the instance and names it.
func TestRunKeep(t *testing.T) {
	t.Parallel() // its own owner: nothing shared with other tests but the daemon
	is := is.New(t)
	d, owner := busybox(t)
	r := incusexec(t, t.Context(), d, "", "--owner", owner, "run", "--keep", "--image", incustest.BusyboxAlias, "--", "touch", "/root/kept")
	is.Equal(r.code, 0)
	names := owned(t, d, owner)
	is.Equal(len(names), 1)
	is.True(strings.Contains(r.stderr, "kept instance "+names[0]))
	r = incusexec(t, t.Context(), d, "", "--owner", owner, "exec", names[0], "--", "ls", "/root/kept")
	is.Equal(r.code, 0)
	r = incusexec(t, t.Context(), d, "", "--owner", owner, "gc")
	is.Equal(r.code, 0)
	is.Equal(r.stdout, "instance "+names[0]+" deleted\n")
	is.Equal(len(owned(t, d, owner)), 0)
}

// TestInstanceCommands walks one instance through launch, exec, push,
// pull, mount, unmount, stats, list, stop and delete, each a separate
// invocation as a shell script would make them.
func TestInstanceCommands(t *testing.T) {
	t.Parallel() // its own owner: nothing shared with other tests but the daemon
	is := is.New(t)
	d, owner := busybox(t)
	ctx := t.Context()
	cli := func(stdin string, args ...string) result {
		return incusexec(t, ctx, d, stdin, append([]string{"--owner", owner}, args...)...)
	}
	r := cli("", "launch", "--image", incustest.BusyboxAlias, "--ready", "network")
	is.Equal(r.code, 0)
	name := strings.TrimSpace(r.stdout)
	is.Equal(owned(t, d, owner), []string{name})

	r = cli("", "exec", name, "--cwd", "/tmp", "--", "pwd")
	is.Equal(r.code, 0)
	is.Equal(r.stdout, "/tmp\n")
	is.Equal(cli("", "exec", name, "--", "sh", "-c", "exit 42").code, 42)

	host := t.TempDir()
	is.NoErr(os.WriteFile(filepath.Join(host, "f.sh"), []byte("#!/bin/sh\necho pushed\n"), 0o755))
	is.Equal(cli("", "push", name, filepath.Join(host, "f.sh"), "/opt/bin/f.sh").code, 0)
	r = cli("", "exec", name, "--", "/opt/bin/f.sh")
	is.Equal(r.stdout, "pushed\n")
	is.Equal(cli("piped\n", "push", name, "-", "/tmp/piped", "--mode", "600", "--uid", "1000").code, 0)
	r = cli("", "exec", name, "--", "stat", "-c", "%a %u", "/tmp/piped")
	is.Equal(r.stdout, "600 1000\n")
	r = cli("", "pull", name, "/tmp/piped", "-")
	is.Equal(r.stdout, "piped\n")
	r = cli("", "pull", name, "/opt/bin/f.sh", host+"/pulled.sh")
	is.Equal(r.code, 0)
	st, err := os.Stat(host + "/pulled.sh")
	is.NoErr(err)
	is.Equal(st.Mode().Perm(), os.FileMode(0o755))
	is.Equal(cli("", "pull", name, "/opt", host+"/opt").code, exitUsage) // a directory needs -r
	is.Equal(cli("", "pull", "-r", name, "/opt", host+"/opt").code, 0)
	_, err = os.Stat(host + "/opt/bin/f.sh")
	is.NoErr(err)

	shared := filepath.Join(host, "shared")
	is.NoErr(os.Mkdir(shared, 0o755))
	is.NoErr(os.WriteFile(filepath.Join(shared, "s.txt"), []byte("s\n"), 0o644))
	r = cli("", "mount", name, "my/alias", shared)
	is.Equal(r.code, 0)
	p := strings.TrimSpace(r.stdout)
	is.Equal(p, mount.Path("my/alias"))
	is.Equal(cli("", "exec", name, "--", "cat", p+"/s.txt").stdout, "s\n")
	is.Equal(cli("", "unmount", name, "my/alias").code, 0)
	is.True(cli("", "exec", name, "--", "cat", p+"/s.txt").code != 0)
	r = cli("", "unmount", name, "my/alias")
	is.Equal(r.code, exitFailure)
	is.True(strings.Contains(r.stderr, "not mounted"))

	r = cli("", "stats", name)
	is.Equal(r.code, 0)
	var stats struct {
		Status     string `json:"status"`
		CPUs       int    `json:"cpus"`
		MemoryUsed int64  `json:"memory_used"`
	}
	is.NoErr(json.Unmarshal([]byte(r.stdout), &stats))
	is.Equal(stats.Status, "Running")
	is.True(stats.CPUs >= 1 && stats.MemoryUsed > 0)

	r = cli("", "--json", "list")
	var rows []struct{ Name, Status string }
	is.NoErr(json.Unmarshal([]byte(r.stdout), &rows))
	is.Equal(len(rows), 1)
	is.Equal(rows[0].Name, name)
	is.Equal(rows[0].Status, "Running")

	is.Equal(cli("", "stop", name, "--timeout", "10s").code, 0)
	r = cli("", "list")
	is.True(strings.Contains(r.stdout, "Stopped"))
	r = cli("", "exec", name, "--", "true")
	is.Equal(r.code, exitFailure)
	is.True(strings.Contains(r.stderr, "not running"))
	is.Equal(cli("", "delete", name).code, 0)
	is.Equal(len(owned(t, d, owner)), 0)
	r = cli("", "exec", name, "--", "true")
	is.Equal(r.code, exitFailure)
	is.True(strings.Contains(r.stderr, "not found"))
}

// TestSetupGC ensures a bridge and profile, finds nothing to change the
// second time, runs an instance on them, and lets gc --networks remove it
// all.
func TestSetupGC(t *testing.T) {
	is := is.New(t)
	d, owner := busybox(t)
	ctx := t.Context()
	cli := func(args ...string) result {
		return incusexec(t, ctx, d, "", append([]string{"--owner", owner}, args...)...)
	}
	network := incustest.UniqueName("ie") // within the 15-byte interface limit
	profile := incustest.UniqueName("prof")
	args := []string{"setup", "--network", network, "--profile", profile, "--pool", d.Pool}
	r := cli(args...)
	is.Equal(r.code, 0)
	is.True(strings.Contains(r.stdout, "created network "+network))
	is.True(strings.Contains(r.stdout, "created profile "+profile))
	r = cli(args...)
	is.Equal(r.code, 0)
	is.True(strings.HasPrefix(r.stdout, "nothing to change\n"))
	n, _, err := d.Client.GetNetwork(network)
	is.NoErr(err)
	is.Equal(n.Config["ipv4.nat"], "false")

	r = cli("launch", "--image", incustest.BusyboxAlias, "--profile", profile, "--ready", "network")
	is.Equal(r.code, 0)
	name := strings.TrimSpace(r.stdout)
	inst, _, err := d.Client.GetInstance(name)
	is.NoErr(err)
	is.Equal(inst.ExpandedDevices["eth0"]["network"], network)

	r = cli("gc", "--older-than", "1h")
	is.Equal(r.code, 0)
	is.Equal(owned(t, d, owner), []string{name}) // too young
	r = cli("--json", "gc", "--networks")
	is.Equal(r.code, 0)
	var out struct {
		Deleted []string `json:"deleted"`
		Changes []string `json:"network_changes"`
	}
	is.NoErr(json.Unmarshal([]byte(r.stdout), &out))
	is.Equal(out.Deleted, []string{name})
	is.Equal(len(out.Changes), 2)
	nets, err := d.Client.GetNetworkNames()
	is.NoErr(err)
	is.True(!slices.Contains(nets, network))
	profiles, err := d.Client.GetProfileNames()
	is.NoErr(err)
	is.True(!slices.Contains(profiles, profile))
}

func TestImageImportRm(t *testing.T) {
	is := is.New(t)
	d := incustest.Shared(t)
	ctx := t.Context()
	owner := incustest.UniqueName("img")
	tarball, err := imagetest.Busybox()
	is.NoErr(err)
	dir := t.TempDir()
	path := filepath.Join(dir, "busybox.tar")
	is.NoErr(os.WriteFile(path, tarball, 0o644))
	id := incustest.UniqueName("cli-image")
	alias := imagebuild.AliasPrefix + id

	r := incusexec(t, ctx, d, "", "--owner", owner, "--json", "image", "import", path, "--alias", id, "--os", "busybox", "--mode", "unified", "--compression", "gzip")
	is.Equal(r.code, 0)
	var img struct {
		Alias, Fingerprint string
		Reused             bool
	}
	is.NoErr(json.Unmarshal([]byte(r.stdout), &img))
	is.Equal(img.Alias, alias)
	got, _, err := d.Client.GetImage(img.Fingerprint)
	is.NoErr(err)
	is.Equal(got.Properties["os"], "busybox")
	r = incusexec(t, ctx, d, "", "--owner", owner, "image", "import", path, "--alias", alias)
	is.Equal(r.code, 0)
	is.True(strings.Contains(r.stdout, "already imported"))

	r = incusexec(t, ctx, d, "", "--owner", owner, "run", "--image", alias, "--", "echo", "booted")
	is.Equal(r.code, 0)
	is.Equal(r.stdout, "booted\n")

	r = incusexec(t, ctx, d, "", "image", "rm", alias)
	is.Equal(r.code, 0)
	_, _, err = d.Client.GetImageAlias(alias)
	is.True(err != nil)
	_, _, err = d.Client.GetImage(img.Fingerprint)
	is.True(err != nil)

	// A broken tarball: a clear error, and no alias or image left.
	bad := filepath.Join(dir, "bad.tar")
	is.NoErr(os.WriteFile(bad, tarball[:len(tarball)/2], 0o644))
	before, err := d.Client.GetImageFingerprints()
	is.NoErr(err)
	r = incusexec(t, ctx, d, "", "image", "import", bad, "--alias", id)
	is.Equal(r.code, exitFailure)
	is.True(strings.Contains(r.stderr, "bad archive"))
	after, err := d.Client.GetImageFingerprints()
	is.NoErr(err)
	is.Equal(len(after), len(before))
	_, _, err = d.Client.GetImageAlias(alias)
	is.True(err != nil)
}

// TestImageImportInterrupted interrupts an import while its input still
// trickles in (a FIFO fed slowly, as a download would): no image and no
// alias may be left.
func TestImageImportInterrupted(t *testing.T) {
	is := is.New(t)
	d := incustest.Shared(t)
	tarball, err := imagetest.Busybox()
	is.NoErr(err)
	fifo := filepath.Join(t.TempDir(), "rootfs.tar")
	is.NoErr(syscall.Mkfifo(fifo, 0o600))
	id := incustest.UniqueName("cancelled")
	before, err := d.Client.GetImageFingerprints()
	is.NoErr(err)
	cmd := exec.CommandContext(t.Context(), os.Args[0], "--socket", d.Socket, "image", "import", fifo, "--alias", id)
	cmd.Env = append(os.Environ(), envMain+"=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	is.NoErr(cmd.Start())
	exited := make(chan struct{})
	flowing := make(chan struct{}) // closed once incusexec has read 200 KB
	go func() {
		// Blocks until incusexec opens the FIFO; fails once it is gone.
		w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			return
		}
		defer w.Close()
		for off := 0; off < len(tarball); off += 4096 {
			select {
			case <-exited:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if _, err := w.Write(tarball[off:min(off+4096, len(tarball))]); err != nil {
				return
			}
			if off == 50*4096 {
				close(flowing)
			}
		}
	}()
	// Interrupt once the upload is under way (about 200 KB of 2 MB read),
	// not after a fixed time: on a loaded host the process may not even
	// have set up its signal handling after a second.
	select {
	case <-flowing:
	case <-time.After(5 * time.Minute):
		t.Fatal("incusexec image import read no 200 KB of its input in 5 minutes")
	}
	is.NoErr(cmd.Process.Signal(syscall.SIGINT))
	_ = cmd.Wait()
	close(exited)
	t.Logf("stderr: %s", stderr.String())
	is.Equal(cmd.ProcessState.ExitCode(), exitInterrupted)
	after, err := d.Client.GetImageFingerprints()
	is.NoErr(err)
	is.Equal(len(after), len(before))
	_, _, err = d.Client.GetImageAlias(imagebuild.AliasPrefix + id)
	is.True(err != nil)
}

func TestVirtArgs(t *testing.T) {
	is := is.New(t)
	d := incustest.Shared(t)
	r := incusexec(t, t.Context(), d, "", "virt-args", "--image", "artifact/x")
	is.Equal(r.stdout, "artifact/x -- --profile default\n")
	r = incusexec(t, t.Context(), d, "", "--json", "virt-args", "--image", "artifact/x", "--vm", "--profile", "debusine")
	var args []string
	is.NoErr(json.Unmarshal([]byte(r.stdout), &args))
	is.Equal(args, []string{"--vm", "artifact/x", "--", "--profile", "debusine"})
}

// TestConfigFile reads the connection and owner from an ISM-style file,
// and refuses a file with a misspelt key.
func TestConfigFile(t *testing.T) {
	t.Parallel() // its own owner: nothing shared with other tests but the daemon
	is := is.New(t)
	d, owner := busybox(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "ism.yaml")
	is.NoErr(os.WriteFile(good, []byte("executors:\n  incus:\n    socket: "+d.Socket+"\n    owner: "+owner+"\n    prefix: cfg-\n    ready: network\n"), 0o644))
	var out, errb strings.Builder
	code := run(t.Context(), []string{"--config", good, "launch", "--image", incustest.BusyboxAlias}, nil, &out, &errb)
	t.Log(errb.String())
	is.Equal(code, 0)
	name := strings.TrimSpace(out.String())
	is.True(strings.HasPrefix(name, "cfg-"))
	is.Equal(owned(t, d, owner), []string{name})
	out.Reset()
	code = run(t.Context(), []string{"gc", "--config", good}, nil, &out, &errb)
	is.Equal(code, 0)
	is.Equal(len(owned(t, d, owner)), 0)

	bad := filepath.Join(dir, "bad.yaml")
	is.NoErr(os.WriteFile(bad, []byte("socket: "+d.Socket+"\nownr: typo\n"), 0o644))
	errb.Reset()
	code = run(t.Context(), []string{"--config", bad, "list"}, nil, &out, &errb)
	is.Equal(code, exitFailure)
	is.True(strings.Contains(errb.String(), bad))
	is.True(strings.Contains(errb.String(), "ownr"))
}

func TestUsage(t *testing.T) {
	is := is.New(t)
	var out, errb strings.Builder
	is.Equal(run(t.Context(), []string{"help"}, nil, &out, &errb), 0)
	for _, c := range commands {
		is.True(strings.Contains(out.String(), "  "+c.name+" "))
	}
	out.Reset()
	is.Equal(run(t.Context(), []string{"help", "config"}, nil, &out, &errb), 0)
	is.True(strings.Contains(out.String(), "allowed_roots:"))
	example := filepath.Join(t.TempDir(), "example.yaml")
	is.NoErr(os.WriteFile(example, []byte(out.String()), 0o644))
	_, err := loadConfig(example) // the example is a valid configuration
	is.NoErr(err)
	is.Equal(run(t.Context(), []string{"frobnicate"}, nil, &out, &errb), exitUsage)
	errb.Reset()
	is.Equal(run(t.Context(), []string{"bench", "-h"}, nil, &out, &errb), exitUsage)
	is.True(strings.Contains(errb.String(), "-quick"))
}
