package testimage

import (
	"fmt"
	"os/exec"
	"strings"

	"github.com/incusexec/incusexec/imagebuild/imagetest"
)

// DebianBuildPackages are added to the minbase in the build variant: what
// sbuild and autopkgtest need in a testbed that builds packages offline.
var DebianBuildPackages = []string{"build-essential", "fakeroot"}

// DebianBuildUser is the normal user (uid 1000) of the build variant, the
// one an autopkgtest virt server suggests for tests without needs-root.
const DebianBuildUser = "debci"

// DebianBuildTarball is the imagetest.Debian tarball's build variant: the same minbase
// with systemd, plus DebianBuildPackages and the user DebianBuildUser,
// cached beside it (a few minutes to build the first time).
func DebianBuildTarball(suite string) (string, error) {
	return imagetest.Debian{
		Suite:   suite,
		Variant: "build-v1",
		Include: DebianBuildPackages,
		// Keeps the package lists: offline builds resolve their build
		// dependencies against what is installed, and apt wants its lists.
		Customize: func(root string) error {
			for _, s := range [][]string{
				{"chroot", root, "useradd", "--create-home", "--uid", "1000", "--shell", "/bin/bash", DebianBuildUser},
				{"chroot", root, "apt-get", "clean"},
			} {
				if b, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
					return fmt.Errorf("%s: %w: %s", strings.Join(s[:3], " "), err, strings.TrimSpace(string(b)))
				}
			}
			return nil
		},
	}.Tarball()
}
