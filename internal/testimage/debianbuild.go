package testimage

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// DebianBuildPackages are added to DebianPackages in the build variant:
// what sbuild and autopkgtest need in a testbed that builds packages
// offline.
var DebianBuildPackages = []string{"build-essential", "fakeroot"}

// DebianBuildUser is the normal user (uid 1000) of the build variant, the
// one an autopkgtest virt server suggests for tests without needs-root.
const DebianBuildUser = "debci"

// DebianBuildTarball is DebianTarball's build variant: the same minbase
// with systemd, plus DebianBuildPackages and the user DebianBuildUser,
// cached in CacheDir beside it (a few minutes to build the first time).
func DebianBuildTarball(suite string) (string, error) {
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
	out := filepath.Join(dir, fmt.Sprintf("debian-%s-minbase-build-v1.tar", suite))
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
	root, err := os.MkdirTemp(dir, "debootstrap-build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(root)
	if err := os.Chmod(root, 0o755); err != nil {
		return "", err
	}
	pkgs := append(append([]string{}, DebianPackages...), DebianBuildPackages...)
	steps := [][]string{
		{"debootstrap", "--variant=minbase", "--include=" + strings.Join(pkgs, ","), suite, root, mirror},
		{"chroot", root, "useradd", "--create-home", "--uid", "1000", "--shell", "/bin/bash", DebianBuildUser},
		{"chroot", root, "apt-get", "clean"},
	}
	for _, s := range steps {
		if b, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
			return "", fmt.Errorf("%s: %w: %s", strings.Join(s[:3], " "), err, lastLines(b, 10))
		}
	}
	// Keep the package lists: offline builds resolve their build
	// dependencies against what is installed, and apt wants its lists.
	tmp := out + ".tmp"
	cmd := exec.Command("tar", "--numeric-owner", "--xattrs", "-C", root, "-cf", tmp, ".")
	if b, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("tar the debootstrapped root: %w: %s", err, lastLines(b, 10))
	}
	return out, os.Rename(tmp, out)
}
