package testimage

import (
	"fmt"
	"os/exec"
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
	name := fmt.Sprintf("debian-%s-minbase-build-v1.tar", suite)
	return cachedDebootstrap(name, suite, func(root, mirror string) error {
		pkgs := append(append([]string{}, DebianPackages...), DebianBuildPackages...)
		steps := [][]string{
			{"debootstrap", "--variant=minbase", "--include=" + strings.Join(pkgs, ","), suite, root, mirror},
			{"chroot", root, "useradd", "--create-home", "--uid", "1000", "--shell", "/bin/bash", DebianBuildUser},
			{"chroot", root, "apt-get", "clean"},
		}
		for _, s := range steps {
			if b, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
				return fmt.Errorf("%s: %w: %s", strings.Join(s[:3], " "), err, lastLines(b, 10))
			}
		}
		// Keep the package lists: offline builds resolve their build
		// dependencies against what is installed, and apt wants its lists.
		return nil
	})
}
