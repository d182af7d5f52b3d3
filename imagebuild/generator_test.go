package imagebuild

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
)

// shimPath returns a directory of wrappers for the commands the generator
// may run; each logs its name to log and runs the real command.
func shimPath(t *testing.T, log string) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"stat", "chmod", "grep", "mkdir", "tr", "cat", "ln", "basename", "rm"} {
		real, err := exec.LookPath(name)
		if err != nil {
			continue
		}
		script := "#!/bin/sh\necho " + name + " >>" + log + "\nexec " + real + " \"$@\"\n"
		if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// runGenerator runs the generator with dash in a user namespace (so that it
// takes the unprivileged path, as in an Incus container) on this host's unit
// files, and returns its output directory and the commands it ran.
func runGenerator(t *testing.T, env ...string) (string, []string) {
	t.Helper()
	out, ran, _ := runScript(t, generatorScript, env...)
	return out, ran
}

// runScript runs script as runGenerator does and also returns how long
// the generator process took.
func runScript(t *testing.T, script string, env ...string) (string, []string, time.Duration) {
	t.Helper()
	paths := map[string]string{}
	for _, c := range []string{"dash", "unshare"} {
		p, err := exec.LookPath(c)
		if err != nil {
			t.Skipf("%s not installed", c)
		}
		paths[c] = p
	}
	dir := t.TempDir()
	gen := filepath.Join(dir, "lxc")
	if err := os.WriteFile(gen, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(dir, "commands.log")
	out := filepath.Join(dir, "out")
	cmd := exec.Command(paths["unshare"], "--user", "--map-root-user", paths["dash"], gen, out, out+".early", out+".late")
	cmd.Env = append([]string{"PATH=" + shimPath(t, log)}, env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	t0 := time.Now()
	err := cmd.Run()
	took := time.Since(t0)
	if err != nil {
		if strings.Contains(stderr.String(), "unshare failed") {
			t.Skipf("no user namespaces here: %s", stderr.String())
		}
		t.Fatalf("generator: %v: %s", err, stderr.String())
	}
	b, err := os.ReadFile(log)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return out, strings.Fields(string(b)), took
}

// hostServices returns the service units of this host's unit directories.
func hostServices(t *testing.T) []string {
	var files []string
	for _, dir := range []string{"/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system"} {
		m, _ := filepath.Glob(filepath.Join(dir, "*.service"))
		files = append(files, m...)
	}
	return files
}

// TestGeneratorForksFewCommands: every process the generator starts delays
// the boot; it must not start one per unit file.
func TestGeneratorForksFewCommands(t *testing.T) {
	is := is.New(t)
	services := hostServices(t)
	if len(services) < 20 {
		t.Skipf("only %d unit files on this host: the check needs many", len(services))
	}
	out, ran := runGenerator(t, "container=lxc")
	t.Logf("%d unit files, commands run: %v", len(services), ran)
	is.True(len(ran) <= 3) // stat, one grep, one mkdir: not one per unit

	relaxing := regexp.MustCompile(`(?m)^(PrivateDevices|ProtectKernelTunables|ProtectKernelModules|ProtectKernelLogs|ProtectClock|ProtectHostname|ProtectHome|ProtectSystem|ProtectControlGroups|PrivateMounts)=`)
	relaxed := 0
	for _, f := range services {
		b, err := os.ReadFile(f)
		if err != nil || !relaxing.Match(b) {
			continue
		}
		relaxed++
		dropin, err := os.ReadFile(filepath.Join(out, filepath.Base(f)+".d", "zz-incusexec-container.conf"))
		is.NoErr(err) // a unit with sandboxing gets the relaxing drop-in
		is.True(strings.HasPrefix(string(dropin), "[Service]\nPrivateDevices=no\n"))
	}
	t.Logf("%d units relaxed", relaxed)

	for _, unit := range []string{"systemd-udevd.service", "modprobe@.service", "e2scrub_reap.service", "dev-hugepages.mount"} {
		st, err := os.Lstat(filepath.Join(out, unit))
		is.NoErr(err)
		is.True(st.Mode().IsRegular() && st.Size() == 0) // masked: an empty unit file
	}
	b, err := os.ReadFile(filepath.Join(out, "systemd-networkd.service.d", "zz-incusexec-no-udev.conf"))
	is.NoErr(err)
	is.Equal(string(b), "[Service]\nReadOnlyPaths=/sys\n")
	if _, err := os.Stat("/lib/systemd/system/systemd-networkd.service"); err == nil {
		b, err := os.ReadFile(filepath.Join(out, "multi-user.target.d", "zz-incusexec-network.conf"))
		is.NoErr(err)
		is.True(strings.Contains(string(b), "Wants=systemd-networkd.service incusexec-host0-ipv4.service"))
		// Boot waits for host0's IPv4 address with the image's own unit,
		// not with systemd-networkd-wait-online (which also waits for
		// IPv6 link-local duplicate address detection).
		b, err = os.ReadFile(filepath.Join(out, "network-online.target.d", "zz-incusexec-network.conf"))
		is.NoErr(err)
		is.Equal(string(b), "[Unit]\nWants=incusexec-host0-ipv4.service\n")
		unit, err := os.ReadFile(filepath.Join(out, "incusexec-host0-ipv4.service"))
		is.NoErr(err)
		is.True(strings.Contains(string(unit), "</proc/net/route"))
		is.True(!strings.Contains(string(unit), "wait-online"))
	}
}

// TestGeneratorOutsideContainer: in a VM or on a host it writes nothing.
func TestGeneratorOutsideContainer(t *testing.T) {
	is := is.New(t)
	out, ran := runGenerator(t, "SYSTEMD_VIRTUALIZATION=vm:kvm")
	_, err := os.Stat(out)
	is.True(os.IsNotExist(err))
	is.Equal(len(ran), 0)
}

// TestNetworkDropInTemplate: the image carries the host0 drop-in, with no
// pongo2 syntax that Incus would render.
func TestNetworkDropInTemplate(t *testing.T) {
	is := is.New(t)
	files, err := metadataEntries(Metadata{Architecture: "amd64"})
	is.NoErr(err)
	is.Equal(string(files["templates/host0-network.tpl"]), networkDropIn)
	is.True(strings.Contains(string(files["metadata.yaml"]), NetworkDropInPath))
	for _, s := range []string{generatorScript, networkDropIn} {
		is.True(!strings.Contains(s, "{{") && !strings.Contains(s, "{%") && !strings.Contains(s, "{#"))
	}
}

// TestGeneratorBenchmarkTable times the generator against the one before
// issue 17 (testdata/generator-before.sh), alternating, on this host's
// unit files in a user namespace, and prints the medians side by side (it
// asserts nothing about time). Only with IMAGEBUILD_BENCH=generator.
//
//	IMAGEBUILD_BENCH=generator go test -run TestGeneratorBenchmarkTable -v ./imagebuild/
func TestGeneratorBenchmarkTable(t *testing.T) {
	if os.Getenv("IMAGEBUILD_BENCH") != "generator" {
		t.Skip("set IMAGEBUILD_BENCH=generator to time the generator")
	}
	before, err := os.ReadFile("testdata/generator-before.sh")
	if err != nil {
		t.Fatal(err)
	}
	var now, old []time.Duration
	var nowRan, oldRan []string
	for i := range 7 {
		scripts := []string{generatorScript, string(before)}
		if i%2 == 1 {
			slices.Reverse(scripts)
		}
		for _, s := range scripts {
			_, ran, d := runScript(t, s, "container=lxc")
			if s == generatorScript {
				now, nowRan = append(now, d), ran
			} else {
				old, oldRan = append(old, d), ran
			}
		}
	}
	med := func(d []time.Duration) time.Duration { s := slices.Clone(d); slices.Sort(s); return s[len(s)/2] }
	load, _ := os.ReadFile("/proc/loadavg")
	t.Logf("generator on %d unit files, 7 runs each, alternating; load %s", len(hostServices(t)), strings.Join(strings.Fields(string(load))[:3], " "))
	t.Logf("| generator | commands started | median (min–max) | ratio |")
	t.Logf("|---|---|---|---|")
	t.Logf("| before (testdata/generator-before.sh) | %d | %v (%v–%v) | 1.00x |", len(oldRan), med(old).Round(time.Millisecond), slices.Min(old).Round(time.Millisecond), slices.Max(old).Round(time.Millisecond))
	t.Logf("| now | %d | %v (%v–%v) | %.2fx |", len(nowRan), med(now).Round(time.Millisecond), slices.Min(now).Round(time.Millisecond), slices.Max(now).Round(time.Millisecond), float64(med(now))/float64(med(old)))
}
