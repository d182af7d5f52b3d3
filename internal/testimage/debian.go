package testimage

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// ErrMissingTool says that a tool the builders need is not installed (or
// that they lack the privileges to use it).
var ErrMissingTool = errors.New("testimage: required tool unavailable")

// CacheDir holds built images between runs, outside the repository.
// INCUSEXEC_TEST_CACHE overrides it.
func CacheDir() string {
	if d := os.Getenv("INCUSEXEC_TEST_CACHE"); d != "" {
		return d
	}
	return "/var/cache/incusexec-test"
}

// DebianPackages are the packages added to debootstrap's minbase: enough for
// a systemd container that networkd brings online.
var DebianPackages = []string{"systemd-sysv", "dbus", "iproute2"}

// DebianMirror returns the URI the machine's apt sources use for the
// Debian suite, so that no mirror is written into the project.
func DebianMirror(suite string) (string, error) {
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if uri := mirrorFromDeb822(string(b), suite); uri != "" {
			return uri, nil
		}
	}
	lists, _ := filepath.Glob("/etc/apt/sources.list.d/*.list")
	for _, f := range append([]string{"/etc/apt/sources.list"}, lists...) {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if uri := mirrorFromOneLine(string(b), suite); uri != "" {
			return uri, nil
		}
	}
	return "", fmt.Errorf("no apt source serves suite %q", suite)
}

func mirrorFromDeb822(text, suite string) string {
	for _, stanza := range strings.Split(text, "\n\n") {
		var uris, suites []string
		for _, line := range strings.Split(stanza, "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			switch strings.TrimSpace(k) {
			case "URIs":
				uris = strings.Fields(v)
			case "Suites":
				suites = strings.Fields(v)
			}
		}
		for _, s := range suites {
			if s == suite && len(uris) > 0 {
				return uris[0]
			}
		}
	}
	return ""
}

func mirrorFromOneLine(text, suite string) string {
	s := bufio.NewScanner(strings.NewReader(text))
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 3 || fields[0] != "deb" {
			continue
		}
		i := 1
		if strings.HasPrefix(fields[i], "[") {
			for i < len(fields) && !strings.HasSuffix(fields[i], "]") {
				i++
			}
			i++
		}
		if i+1 < len(fields) && fields[i+1] == suite {
			return fields[i]
		}
	}
	return ""
}

// HostSuite is the codename of the host's Debian release.
func HostSuite() string {
	b, _ := os.ReadFile("/etc/os-release")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VERSION_CODENAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return "bookworm"
}

// DebianTarball returns the path of a Debusine-style system tarball (an
// uncompressed tar of a debootstrapped minbase root filesystem with systemd,
// entries named "./...") for suite, building it with debootstrap on first use
// (about a minute) and caching it in CacheDir keyed by suite. Concurrent
// processes build it once.
func DebianTarball(suite string) (string, error) {
	// The version in the name changes whenever the recipe does, so that a
	// stale cache is never used (v2: root directory mode 0755).
	return cachedDebootstrap(fmt.Sprintf("debian-%s-minbase-systemd-v2.tar", suite), suite, func(root, mirror string) error {
		cmd := exec.Command("debootstrap", "--variant=minbase", "--include="+strings.Join(DebianPackages, ","), suite, root, mirror)
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("debootstrap %s from %s: %w: %s", suite, mirror, err, lastLines(b, 10))
		}
		// Drop downloaded packages and lists, which only make images larger.
		for _, p := range []string{"var/cache/apt/archives", "var/lib/apt/lists"} {
			entries, _ := os.ReadDir(filepath.Join(root, p))
			for _, e := range entries {
				if e.Name() != "partial" && e.Name() != "lock" {
					os.RemoveAll(filepath.Join(root, p, e.Name()))
				}
			}
		}
		return nil
	})
}

// cachedDebootstrap returns CacheDir/name, making it first (once across
// processes) as a tar of a root that build fills from suite's mirror.
func cachedDebootstrap(name, suite string, build func(root, mirror string) error) (string, error) {
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("%w: debootstrap needs root", ErrMissingTool)
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return "", fmt.Errorf("%w: debootstrap not installed (run `make deps`)", ErrMissingTool)
	}
	dir := CacheDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	out := filepath.Join(dir, name)
	unlock, err := LockFile(out + ".lock")
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	mirror, err := DebianMirror(suite)
	if err != nil {
		return "", err
	}
	root, err := os.MkdirTemp(dir, "debootstrap-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(root)
	// MkdirTemp makes the directory 0700, and tar records the root's mode:
	// a 0700 / keeps every unprivileged service out (networkd fails CHDIR).
	if err := os.Chmod(root, 0o755); err != nil {
		return "", err
	}
	if err := build(root, mirror); err != nil {
		return "", err
	}
	tmp := out + ".tmp"
	cmd := exec.Command("tar", "--numeric-owner", "--xattrs", "-C", root, "-cf", tmp, ".")
	if b, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("tar the debootstrapped root: %w: %s", err, lastLines(b, 10))
	}
	return out, os.Rename(tmp, out)
}

// Compressed returns path compressed with "gz", "xz" or "zst", cached beside
// it.
func Compressed(path, ext string) (string, error) {
	out := path + "." + ext
	unlock, err := LockFile(out + ".lock")
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	var tool []string
	switch ext {
	case "gz":
		tool = []string{"gzip", "-c", "-6"}
	case "xz":
		tool = []string{"xz", "-c", "-T0", "-6"}
	case "zst":
		tool = []string{"zstd", "-c", "-q", "-T0", "-19"}
	default:
		return "", fmt.Errorf("unknown compression %q (want gz, xz or zst)", ext)
	}
	f, err := os.Create(out + ".tmp")
	if err != nil {
		return "", err
	}
	cmd := exec.Command(tool[0], append(tool[1:], path)...)
	cmd.Stdout = f
	if err := cmd.Run(); err != nil {
		f.Close()
		os.Remove(out + ".tmp")
		return "", fmt.Errorf("%s %s: %w", tool[0], path, err)
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return out, os.Rename(out+".tmp", out)
}

// LockFile takes an exclusive lock shared with other processes.
func LockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
