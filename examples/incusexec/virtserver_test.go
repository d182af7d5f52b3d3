package main

import (
	"bufio"
	"context"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/lxc/incus/v6/shared/api"
	"github.com/matryer/is"
)

// virtServerMain makes the test binary stand in for the installed one when
// autopkgtest or sbuild runs it: as autopkgtest-virt-incusexec (a symlink
// to it) or as the execute command ("virt-exec", named by the absolute
// path of the binary). Neither passes the environment on reliably (sbuild
// filters it), so argv decides.
func virtServerMain() {
	if filepath.Base(os.Args[0]) == timingShimName {
		os.Exit(timingShim(os.Args[1:]))
	}
	if filepath.Base(os.Args[0]) == execTimerName {
		os.Exit(execTimer(os.Args[1:]))
	}
	if filepath.Base(os.Args[0]) == virtServerName {
		main()
	}
	for _, a := range os.Args[1:] {
		if a == "virt-exec" {
			main()
		}
		if !strings.HasPrefix(a, "--") {
			return
		}
	}
}

// apkgTests is an autopkgtest suite covering what the virt server has to
// provide. Tests run in this order; "clean" sees whether "breaks"'s damage
// was reverted.
var apkgTests = map[string]string{
	"debian/tests/control": `Tests: pass
Depends:

Tests: fail
Depends:

Tests: user
Depends:

Tests: root
Depends:
Restrictions: needs-root

Tests: container
Depends:
Restrictions: isolation-container, needs-root

Tests: breaks
Depends:
Restrictions: breaks-testbed, needs-root

Tests: clean
Depends:
Restrictions: needs-root

Tests: reboot
Depends:
Restrictions: needs-reboot, needs-root
`,
	"debian/tests/pass": `#!/bin/sh
set -e
echo "hello from $(hostname)" > "$AUTOPKGTEST_ARTIFACTS/hello.txt"
mkdir -p "$AUTOPKGTEST_ARTIFACTS/sub"
echo nested > "$AUTOPKGTEST_ARTIFACTS/sub/nested.txt"
# The login environment: PATH from /etc/profile, no variable of the host's.
case ":$PATH:" in *:/usr/bin:*) ;; *) echo "PATH $PATH" >&2; exit 1 ;; esac
test -z "${INCUS_DIR:-}"
# A daemon left behind holding the output must not hang the test.
sleep 600 &
echo pass
`,
	"debian/tests/fail": "#!/bin/sh\necho failing on purpose\nexit 3\n",
	"debian/tests/user": `#!/bin/sh
set -e
test "$(id -u)" -ge 1000
echo "as $(id -un)"
`,
	"debian/tests/root":      "#!/bin/sh\nset -e\ntest \"$(id -u)\" -eq 0\n",
	"debian/tests/container": "#!/bin/sh\nset -e\nsystemctl is-system-running || true\ntest -d /run/systemd/system\n",
	"debian/tests/breaks":    "#!/bin/sh\nset -e\ntouch /etc/broken-by-test\nsleep 3600 >/dev/null 2>&1 &\necho broke\n",
	"debian/tests/clean": `#!/bin/sh
set -e
test ! -e /etc/broken-by-test
! grep -qx sleep /proc/[0-9]*/comm
echo clean
`,
	"debian/tests/reboot": `#!/bin/sh
set -e
start() { cut -d' ' -f22 /proc/1/stat; }
case "${AUTOPKGTEST_REBOOT_MARK:-}" in
"")
	start > /var/tmp/init-start
	echo kept > "$AUTOPKGTEST_TMP/kept"
	/tmp/autopkgtest-reboot first
	;;
first)
	test "$(start)" != "$(cat /var/tmp/init-start)"
	test "$(cat "$AUTOPKGTEST_TMP/kept")" = kept
	start > /var/tmp/init-start
	/tmp/autopkgtest-reboot-prepare second
	reboot
	;;
second)
	test "$(start)" != "$(cat /var/tmp/init-start)"
	echo rebooted twice
	;;
esac
`,
	"debian/control": `Source: ietest
Maintainer: incusexec tests <tests@incusexec.invalid>
Section: misc
Priority: optional
Standards-Version: 4.6.2
Rules-Requires-Root: no

Package: ietest
Architecture: all
Description: incusexec virt-server test package
 A package built and tested by incusexec's tests.
`,
	"debian/changelog": `ietest (1.0) unstable; urgency=medium

  * Test package.

 -- incusexec tests <tests@incusexec.invalid>  Sun, 29 Nov 2026 20:00:00 +0000
`,
	"debian/source/format": "3.0 (native)\n",
	// Plain make, no debhelper: build-essential is all the image has.
	"debian/rules": "#!/usr/bin/make -f\n" +
		"build build-arch build-indep:\n" +
		"clean:\n\trm -rf debian/tmp debian/files\n" +
		"binary: binary-indep\n" +
		"binary-arch:\n" +
		"binary-indep:\n" +
		"\tinstall -d debian/tmp/DEBIAN debian/tmp/usr/share/ietest\n" +
		"\techo built in $$(hostname) > debian/tmp/usr/share/ietest/hello\n" +
		"\tdpkg-gencontrol -pietest -Pdebian/tmp\n" +
		"\tdpkg-deb --root-owner-group --build debian/tmp ..\n" +
		".PHONY: build build-arch build-indep clean binary binary-arch binary-indep\n",
}

func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if strings.HasPrefix(body, "#!") {
			mode = 0o755
		}
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
	}
}

// serverOnPath puts the test binary on a fresh PATH directory as
// autopkgtest-virt-incusexec and returns that directory.
func serverOnPath(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Symlink(self, filepath.Join(dir, virtServerName)); err != nil {
		t.Fatal(err)
	}
	return dir
}

// wrapHelper puts a script in front of the execute helper in dir that
// counts its runs into calls, to show the server named it.
func wrapHelper(t *testing.T, dir, calls string) {
	t.Helper()
	h := filepath.Join(dir, execHelperName)
	if err := os.Rename(h, h+".real"); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\necho \"$1\" >> '" + calls + "'\nexec '" + h + ".real' \"$@\"\n"
	if err := os.WriteFile(h, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

// withExecHelper builds the small execute command (./virtexec) into dir,
// beside the server, where the server finds it as an installed one would
// be; without it the server names its own virt-exec --relay.
func withExecHelper(t *testing.T, dir string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, execHelperName), "github.com/incusexec/incusexec/examples/incusexec/virtexec")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // as make install builds it
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go build the execute helper: %v\n%s", err, b)
	}
}

// summary reads autopkgtest's summary file: test name to result word.
func summary(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("autopkgtest summary: %v", err)
	}
	defer f.Close()
	got := map[string]string{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		if fs := strings.Fields(s.Text()); len(fs) >= 2 {
			got[fs[0]] = fs[1]
		}
	}
	return got
}

func needTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		incustest.SkipOrFail(t, incustest.ErrUnavailable)
	}
}

// TestAutopkgtestVirtServer runs the real autopkgtest against
// autopkgtest-virt-incusexec on a debootstrapped image, offline.
func TestAutopkgtestVirtServer(t *testing.T) {
	needTool(t, "autopkgtest")
	t.Parallel()
	is := is.New(t)
	d := incustest.Shared(t)
	image := d.DebianBuildImage(t)
	profile := d.DebianProfile(t)
	owner := incustest.UniqueName("avs")
	work := t.TempDir()
	src := filepath.Join(work, "ietest")
	writeTree(t, src, apkgTests)
	out := filepath.Join(work, "out")
	bin := serverOnPath(t)
	withExecHelper(t, bin) // as make install leaves it
	calls := filepath.Join(work, "helper-calls")
	wrapHelper(t, bin, calls)

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	// "-- incusexec": autopkgtest finds autopkgtest-virt-incusexec on PATH.
	cmd := exec.CommandContext(ctx, "autopkgtest", "--output-dir", out, "--timeout-test=300", "--no-built-binaries", src+"/",
		"--", "incusexec", "--socket="+d.Socket, "--owner="+owner, image, "--", "--profile", profile)
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "INCUS_DIR=/nonexistent")
	b, err := cmd.CombinedOutput()
	t.Logf("autopkgtest: %v\n%s", err, b)
	code := cmd.ProcessState.ExitCode()
	is.Equal(code, 4) // 4: some test failed (the one meant to), nothing worse

	is.Equal(summary(t, filepath.Join(out, "summary")), map[string]string{
		"pass": "PASS", "fail": "FAIL", "user": "PASS", "root": "PASS", "container": "PASS",
		"breaks": "PASS", "clean": "PASS", "reboot": "PASS",
	})
	hello, err := os.ReadFile(filepath.Join(out, "artifacts", "hello.txt"))
	is.NoErr(err)
	is.True(strings.HasPrefix(string(hello), "hello from avs-"))
	nested, err := os.ReadFile(filepath.Join(out, "artifacts", "sub", "nested.txt"))
	is.NoErr(err)
	is.Equal(string(nested), "nested\n")
	user, err := os.ReadFile(filepath.Join(out, "user-stdout"))
	is.NoErr(err)
	is.Equal(string(user), "as debci\n")
	// Every testbed command went through the helper and the relay.
	helped, err := os.ReadFile(calls)
	is.NoErr(err)
	is.True(strings.Count(string(helped), "/exec.sock\n") > 20)

	// Nothing of the server's is left: testbed, replaced instances, spares.
	assertNothingLeft(ctx, t, d, owner)
}

// TestSbuildVirtServer builds a source package with the real sbuild in
// autopkgtest mode on autopkgtest-virt-incusexec, offline, and checks
// that the .deb comes out.
func TestSbuildVirtServer(t *testing.T) {
	needTool(t, "sbuild")
	t.Parallel()
	needTool(t, "dpkg-source")
	is := is.New(t)
	d := incustest.Shared(t)
	image := d.DebianBuildImage(t)
	profile := d.DebianProfile(t)
	owner := incustest.UniqueName("avs")
	work := t.TempDir()
	writeTree(t, filepath.Join(work, "ietest"), apkgTests)
	src := exec.Command("dpkg-source", "-b", "ietest")
	src.Dir = work
	if b, err := src.CombinedOutput(); err != nil {
		t.Fatalf("dpkg-source -b: %v\n%s", err, b)
	}
	bin := serverOnPath(t)
	withExecHelper(t, bin) // as make install leaves it
	server := filepath.Join(bin, virtServerName)
	out := filepath.Join(work, "out")
	is.NoErr(os.Mkdir(out, 0o755))

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	args := []string{"--chroot-mode=autopkgtest", "--autopkgtest-virt-server=" + server}
	// sbuild runs the server with a filtered environment: the daemon is
	// named in the server's own arguments.
	for _, o := range []string{"--socket=" + d.Socket, "--owner=" + owner, image, "--", "--profile", profile} {
		args = append(args, "--autopkgtest-virt-server-opt="+o)
	}
	args = append(args, "--dist="+"bookworm", "--arch-all", "--no-arch-any",
		"--no-apt-update", "--no-apt-upgrade", "--no-apt-distupgrade",
		"--no-run-lintian", "--no-run-piuparts", "--no-run-autopkgtest",
		"--build-dir="+out, filepath.Join(work, "ietest_1.0.dsc"))
	cmd := exec.CommandContext(ctx, "sbuild", args...)
	cmd.Dir = out
	cmd.Env = append(os.Environ(), "INCUS_DIR=/nonexistent", "INCUS_SOCKET=/nonexistent")
	b, err := cmd.CombinedOutput()
	t.Logf("sbuild: %v\n%s", err, b)
	is.NoErr(err)

	deb := filepath.Join(out, "ietest_1.0_all.deb")
	contents, err := exec.Command("dpkg-deb", "--fsys-tarfile", deb).Output()
	is.NoErr(err)
	is.True(strings.Contains(string(contents), "./usr/share/ietest/hello"))

	assertNothingLeft(ctx, t, d, owner)
}

// TestAutopkgtestStockReference runs the same suite (but the reboot test)
// against autopkgtest's own autopkgtest-virt-incus on the same image and
// daemon, as the reference: the results must be the same. (Its reboot
// test cannot pass without lxcfs: it waits for /proc/uptime, which is the
// host's, to go down, and times out; see README.)
//
// It is the reference, not a test of this project's code, and costs as much
// as the suite it mirrors, so `make test` leaves it out:
//
//	INCUSEXEC_STOCK_REFERENCE=1 go test -count=1 -v -run TestAutopkgtestStockReference ./examples/incusexec/
func TestAutopkgtestStockReference(t *testing.T) {
	if os.Getenv("INCUSEXEC_STOCK_REFERENCE") == "" {
		t.Skip("set INCUSEXEC_STOCK_REFERENCE=1 to run the same suite against the stock autopkgtest-virt-incus")
	}
	needTool(t, "autopkgtest")
	t.Parallel()
	needTool(t, "autopkgtest-virt-incus")
	is := is.New(t)
	d := incustest.Shared(t)
	image := d.DebianBuildImage(t)
	profile := d.DebianProfile(t)
	work := t.TempDir()
	src := filepath.Join(work, "ietest")
	writeTree(t, src, apkgTests)
	out := filepath.Join(work, "out")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "autopkgtest", "--output-dir", out, "--timeout-test=300", "--no-built-binaries", "--skip-test=reboot", src+"/",
		"--", "incus", image, "--", "--profile", profile)
	// The stock server drives the incus command, which finds the test
	// daemon through INCUS_DIR.
	cmd.Env = append(os.Environ(), "INCUS_DIR="+d.Dir)
	b, err := cmd.CombinedOutput()
	t.Logf("autopkgtest: %v\n%s", err, b)
	is.Equal(cmd.ProcessState.ExitCode(), 4)
	is.Equal(summary(t, filepath.Join(out, "summary")), map[string]string{
		"pass": "PASS", "fail": "FAIL", "user": "PASS", "root": "PASS", "container": "PASS",
		"breaks": "PASS", "clean": "PASS",
	})
}

// TestVirtServerSignals: SIGTERM makes the server delete what it made (and
// remove its relay's socket); after SIGKILL, the owner's gc does. Before
// the SIGTERM, its execute command runs a command through the relay,
// refuses an instance other than the testbed, and a broken output pipe
// leaves the server serving.
func TestVirtServerSignals(t *testing.T) {
	d := incustest.Shared(t)
	image := d.DebianBuildImage(t) // the one image this package imports
	profile := d.DebianProfile(t)
	server := filepath.Join(serverOnPath(t), virtServerName)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			is := is.New(t)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			owner := incustest.UniqueName("avs")
			cmd := exec.Command(server, "--socket="+d.Socket, "--owner="+owner, image, "--", "--profile", profile)
			tmp := t.TempDir() // the relay's socket directory goes here
			cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
			in, _ := cmd.StdinPipe()
			out, _ := cmd.StdoutPipe()
			cmd.Stderr = os.Stderr
			is.NoErr(cmd.Start())
			r := bufio.NewReader(out)
			io.WriteString(in, "open\n")
			for _, want := range []string{"ok\n", "ok /tmp/autopkgtest."} {
				line, err := r.ReadString('\n')
				is.NoErr(err)
				is.True(strings.HasPrefix(line, want))
			}
			m, err := instance.New(d.Client, instance.Config{Owner: owner})
			is.NoErr(err)
			defer m.Close()
			if sig == syscall.SIGTERM {
				// The execute command (the server's own virt-exec
				// --relay here) runs in the testbed it names, and only
				// there.
				io.WriteString(in, "print-execute-command\n")
				line, err := r.ReadString('\n')
				is.NoErr(err)
				argv := parseExecuteCommand(t, line)
				is.True(slices.Contains(argv, "virt-exec"))
				out, err := exec.Command(argv[0], append(argv[1:], "sh", "-c", "id -u; echo $PATH; exit 7")...).Output()
				is.Equal(exitCode(err), 7)
				is.Equal(string(out), "0\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n") // root, /etc/profile's PATH
				name := argv[len(argv)-2]
				argv[len(argv)-2] = "avs-not-the-testbed"
				var errb strings.Builder
				c := exec.Command(argv[0], append(argv[1:], "true")...)
				c.Stderr = &errb
				is.Equal(exitCode(c.Run()), 255)
				is.True(strings.Contains(errb.String(), "avs-not-the-testbed is not the testbed (it is "+name+" now)"))

				// A reader of a command's output going away (autopkgtest
				// killing a timed-out command) breaks the pipe the server
				// writes into; the server carries on.
				argv[len(argv)-2] = name
				c = exec.Command(argv[0], append(argv[1:], "seq", "1", "300000")...)
				pipe, err := c.StdoutPipe()
				is.NoErr(err)
				is.NoErr(c.Start())
				first, err := bufio.NewReader(pipe).ReadString('\n')
				is.NoErr(err)
				is.Equal(first, "1\n")
				pipe.Close()
				c.Wait() // its status is whatever the broken pipe made it
				io.WriteString(in, "capabilities\n")
				line, err = r.ReadString('\n')
				is.NoErr(err)
				is.True(strings.HasPrefix(line, "ok ")) // the server still answers
			}
			if sig == syscall.SIGKILL {
				// Killed once the spare is made too (GC cannot delete an
				// instance whose creation is still under way).
				for {
					made, err := m.List(ctx)
					is.NoErr(err)
					running := 0
					for _, n := range made {
						if st, err := m.Instance(n).Status(ctx); err == nil && st == api.Running {
							running++
						}
					}
					if running == 2 {
						break
					}
					select {
					case <-ctx.Done():
						t.Fatalf("testbed and spare not running: %v", made)
					case <-time.After(time.Second):
					}
				}
			}

			is.NoErr(cmd.Process.Signal(sig))
			cmd.Wait()
			if sig == syscall.SIGKILL {
				// What `incusexec gc --owner OWNER` does.
				_, err := m.GC(ctx, instance.GCOptions{})
				is.NoErr(err)
			}
			is.Equal(len(waitGone(ctx, t, m)), 0)
			if sig == syscall.SIGTERM {
				relays, err := filepath.Glob(filepath.Join(tmp, "incusexec-relay-*"))
				is.NoErr(err)
				is.Equal(len(relays), 0) // the relay's socket directory is gone too
				outs, err := filepath.Glob(filepath.Join(tmp, "incusexec-output-*"))
				is.NoErr(err)
				is.Equal(len(outs), 0) // and the testbed's output directory
			}
		})
	}
}

// TestAutopkgtestStockReboot documents why the reference leaves the reboot
// test out: the stock autopkgtest-virt-incus waits for the testbed's
// /proc/uptime to go down, which without lxcfs is the host's, and gives
// up. It takes minutes, so it runs only when asked:
//
//	INCUSEXEC_STOCK_REBOOT=1 go test -count=1 -v -run TestAutopkgtestStockReboot ./examples/incusexec/
func TestAutopkgtestStockReboot(t *testing.T) {
	if os.Getenv("INCUSEXEC_STOCK_REBOOT") == "" {
		t.Skip("set INCUSEXEC_STOCK_REBOOT=1 to show the stock server's reboot failure")
	}
	needTool(t, "autopkgtest")
	needTool(t, "autopkgtest-virt-incus")
	is := is.New(t)
	d := incustest.Shared(t)
	image := d.DebianBuildImage(t)
	profile := d.DebianProfile(t)
	work := t.TempDir()
	src := filepath.Join(work, "ietest")
	writeTree(t, src, apkgTests)
	out := filepath.Join(work, "out")
	cmd := exec.Command("autopkgtest", "--output-dir", out, "--no-built-binaries", "--test-name=reboot", src+"/",
		"--", "incus", image, "--", "--profile", profile)
	cmd.Env = append(os.Environ(), "INCUS_DIR="+d.Dir)
	b, err := cmd.CombinedOutput()
	t.Logf("autopkgtest: %v\n%s", err, b)
	is.Equal(cmd.ProcessState.ExitCode(), 16) // testbed failure
	is.True(strings.Contains(string(b), "timed out waiting for container"))
}

// exitCode is a command's exit status from its error (0 for nil, -1 when
// it did not exit).
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

// TestVirtServerRevertsTwice: the first revert takes the spare booted after
// open; without refill (a host of two CPUs or fewer, see
// virtserver.IncusConfig.Refill) the second boots its instance then. Each
// revert brings back a fresh testbed (a file written before is gone), the
// execute command printed after it runs there, the one printed before
// refuses, and close leaves nothing, the replaced instances included.
func TestVirtServerRevertsTwice(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	d := incustest.Shared(t)
	image := d.DebianBuildImage(t)
	profile := d.DebianProfile(t)
	server := filepath.Join(serverOnPath(t), virtServerName)
	owner := incustest.UniqueName("avs")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	srv := startServer(ctx, t, nil, server, "--socket="+d.Socket, "--owner="+owner, image, "--", "--profile", profile)
	ask := srv.ask
	execCmd := func() []string { return parseExecuteCommand(t, "ok "+ask("print-execute-command")) }
	run := func(argv []string, script string) (string, int) {
		b, err := exec.Command(argv[0], append(argv[1:], "sh", "-c", script)...).Output()
		return string(b), exitCode(err)
	}
	ask("")
	ask("open")
	before := execCmd()
	_, code := run(before, "touch /etc/dirty")
	is.Equal(code, 0)
	names := map[string]bool{before[len(before)-2]: true}
	for i := 1; i <= 2; i++ {
		ask("revert")
		now := execCmd()
		name := now[len(now)-2]
		is.True(!names[name]) // a new instance each time
		names[name] = true
		got, code := run(now, "test -e /etc/dirty && echo dirty || echo clean; touch /etc/dirty")
		is.Equal(code, 0)
		is.Equal(got, "clean\n")
		_, code = run(before, "true")
		is.Equal(code, 255) // the instance it names is not the testbed any more
		before = now
	}
	is.NoErr(srv.closeAndQuit())
	assertNothingLeft(ctx, t, d, owner)
}

// avsProc is a virt server started by a test, spoken to on its stdin and
// stdout.
type avsProc struct {
	t    *testing.T
	cmd  *exec.Cmd
	in   io.WriteCloser
	r    *bufio.Reader
	logs strings.Builder // its stderr
}

// startServer starts argv with env added to the environment.
func startServer(ctx context.Context, t *testing.T, env []string, argv ...string) *avsProc {
	t.Helper()
	s := &avsProc{t: t, cmd: exec.CommandContext(ctx, argv[0], argv[1:]...)}
	s.cmd.Env = append(os.Environ(), env...)
	s.in, _ = s.cmd.StdinPipe()
	out, _ := s.cmd.StdoutPipe()
	s.cmd.Stderr = &s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.r = bufio.NewReader(out)
	return s
}

// ask sends req ("" reads the greeting) and returns the words after "ok";
// any other reply fails the test, with what the server logged.
func (s *avsProc) ask(req string) string {
	s.t.Helper()
	if req != "" {
		io.WriteString(s.in, req+"\n")
	}
	line, err := s.r.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ok") {
		s.t.Fatalf("%s: reply %q, %v; the server's stderr:\n%s", req, line, err, s.logs.String())
	}
	return strings.TrimSpace(strings.TrimPrefix(line, "ok"))
}

// closeAndQuit closes the testbed, quits and waits for the server's exit.
func (s *avsProc) closeAndQuit() error {
	s.t.Helper()
	s.ask("close")
	io.WriteString(s.in, "quit\n")
	s.in.Close()
	return s.cmd.Wait()
}

// assertNothingLeft fails t when an instance of owner is left on d.
func assertNothingLeft(ctx context.Context, t *testing.T, d *incustest.Daemon, owner string) {
	t.Helper()
	m, err := instance.New(d.Client, instance.Config{Owner: owner})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if left := waitGone(ctx, t, m); len(left) != 0 {
		t.Fatalf("left behind by the server: %v", left)
	}
}

// discardWait bounds how long the instances a server discarded at close
// take to go: incusd stops and deletes them after the server has exited
// (virtserver.Incus.Close), which takes about a second.
const discardWait = 30 * time.Second

// waitGone returns m's instances once there are none, or those still
// there after discardWait.
func waitGone(ctx context.Context, t *testing.T, m *instance.Manager) []string {
	t.Helper()
	deadline := time.Now().Add(discardWait)
	for {
		left, err := m.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// parseExecuteCommand splits print-execute-command's reply (after "ok ")
// into the execute command's argv.
func parseExecuteCommand(t *testing.T, reply string) []string {
	t.Helper()
	var argv []string
	for _, a := range strings.Split(strings.TrimSpace(strings.TrimPrefix(reply, "ok ")), ",") {
		u, err := url.PathUnescape(a)
		if err != nil {
			t.Fatalf("print-execute-command %q: %v", reply, err)
		}
		argv = append(argv, u)
	}
	return argv
}

// TestVirtServerOpenFailsCleanly: an open that cannot succeed fails with an
// error naming what is at fault, the server exits non-zero, and nothing of
// its owner is left: not for an image that does not exist (nothing is
// created), nor for an instance that is created and started but stops at
// once (its init is /bin/false).
func TestVirtServerOpenFailsCleanly(t *testing.T) {
	t.Parallel()
	d := incustest.Shared(t)
	d.BusyboxImage(t)
	server := filepath.Join(serverOnPath(t), virtServerName)
	for _, tc := range []struct {
		name string
		args []string
		want string // in the server's error
	}{
		{"missing image", []string{"no/such-image"}, "no/such-image"},
		{"init exits", []string{incustest.BusyboxAlias, "--", "-c", "raw.lxc=lxc.init.cmd=/bin/false"}, "not running"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			owner := incustest.UniqueName("avs")
			cmd := exec.CommandContext(ctx, server, append([]string{"--socket=" + d.Socket, "--owner=" + owner}, tc.args...)...)
			cmd.Stdin = strings.NewReader("open\n")
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			t.Logf("stdout %q, stderr:\n%s", stdout.String(), stderr.String())
			is.True(exitCode(err) > 0)                                           // the server failed
			is.Equal(stdout.String(), "ok\n")                                    // the greeting, and no reply to open
			is.True(strings.Contains(strings.ToLower(stderr.String()), tc.want)) // what is at fault
			assertNothingLeft(ctx, t, d, owner)
		})
	}
}
