package imagebuild

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

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
	if err := os.WriteFile(gen, []byte(generatorScript), 0o755); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(dir, "commands.log")
	out := filepath.Join(dir, "out")
	cmd := exec.Command(paths["unshare"], "--user", "--map-root-user", paths["dash"], gen, out, out+".early", out+".late")
	cmd.Env = append([]string{"PATH=" + shimPath(t, log)}, env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if strings.Contains(stderr.String(), "unshare failed") {
			t.Skipf("no user namespaces here: %s", stderr.String())
		}
		t.Fatalf("generator: %v: %s", err, stderr.String())
	}
	b, err := os.ReadFile(log)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return out, strings.Fields(string(b))
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
		is.True(strings.Contains(string(b), "Wants=systemd-networkd.service"))
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
