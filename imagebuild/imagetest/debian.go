package imagetest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// basePackages are what every Debian tarball adds to debootstrap's minbase:
// enough for a systemd container that networkd brings online.
var basePackages = []string{"systemd-sysv", "dbus", "iproute2"}

// plainVariant names the plain recipe in the cache; the version changes
// whenever the recipe does, so that a stale tarball is never used (v2: root
// directory mode 0755).
const plainVariant = "systemd-v2"

var cacheWord = regexp.MustCompile(`^[a-z0-9][a-z0-9.+-]{0,63}$`)

// Debian describes a Debusine-style system tarball: debootstrap's minbase
// variant of a Debian suite with systemd-sysv, dbus and iproute2 (a
// container that boots systemd, which networkd brings online), as an
// uncompressed tar with entries named "./...". The zero Debian is the plain
// recipe for the host's suite.
type Debian struct {
	// Suite is the Debian codename ("bookworm"); HostSuite's when empty.
	Suite string
	// Include adds packages to the minbase.
	Include []string
	// Customize, when set, runs on the debootstrapped root directory before
	// it is archived (to chroot into it and add a user, say) instead of the
	// default clean-up, which drops the downloaded packages and the package
	// lists.
	Customize func(root string) error
	// Variant names the recipe in the cache and is required with Include or
	// Customize: a cached tarball is used as it is, so change the name
	// whenever the recipe changes.
	Variant string
}

// Tarball returns the path of the tarball in CacheDir, building it first
// when it is not there yet (about a minute; once across processes, which
// wait for each other). Building needs root and debootstrap (else an error
// wrapping ErrMissingTool) and takes the packages from the mirror the
// machine's apt sources use for the suite.
func (d Debian) Tarball() (string, error) {
	suite := d.Suite
	if suite == "" {
		suite = HostSuite()
	}
	variant := d.Variant
	if variant == "" {
		if len(d.Include) > 0 || d.Customize != nil {
			return "", fmt.Errorf("imagetest: Debian %s with Include or Customize needs a Variant to be cached under", suite)
		}
		variant = plainVariant
	}
	if !cacheWord.MatchString(suite) || !cacheWord.MatchString(variant) {
		return "", fmt.Errorf("imagetest: Debian suite %q or variant %q is not a lower-case word", suite, variant)
	}
	return cachedDebootstrap(fmt.Sprintf("debian-%s-minbase-%s.tar", suite, variant), suite, func(root, mirror string) error {
		pkgs := append(append([]string{}, basePackages...), d.Include...)
		cmd := exec.Command("debootstrap", "--variant=minbase", "--include="+strings.Join(pkgs, ","), suite, root, mirror)
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("debootstrap %s from %s: %w: %s", suite, mirror, err, lastLines(b, 10))
		}
		if d.Customize != nil {
			return d.Customize(root)
		}
		// Downloaded packages and lists only make images larger.
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
	dir := CacheDir()
	out := filepath.Join(dir, name)
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("%w: building %s: debootstrap needs root", ErrMissingTool, name)
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return "", fmt.Errorf("%w: building %s: debootstrap not installed", ErrMissingTool, name)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	unlock, err := lockFile(out + ".lock")
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := os.Stat(out); err == nil {
		return out, nil // another process built it while we waited
	}
	mirror, err := debianMirror(suite)
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

// HostSuite is the codename of the host's Debian release (bookworm when
// /etc/os-release does not say).
func HostSuite() string {
	b, _ := os.ReadFile("/etc/os-release")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VERSION_CODENAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return "bookworm"
}

// debianMirror returns the URI the machine's apt sources use for the Debian
// suite, so that no mirror is written into the project.
func debianMirror(suite string) (string, error) {
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
	return "", fmt.Errorf("imagetest: no apt source serves suite %q", suite)
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
