// Package install holds the scripts that install and start what incusexec
// needs; this test checks how install-deps.sh derives the backports source.
package install

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/matryer/is"
)

func TestDeriveBackportsSource(t *testing.T) {
	tests := []struct {
		name, aptEtc, want string
	}{
		{"deb822", "testdata/deb822", "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm-backports\nComponents: main contrib\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"},
		{"one-line", "testdata/oneline", "deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://mirror.example/debian bookworm-backports main non-free-firmware\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			cmd := exec.Command("bash", "install-deps.sh", "--print-backports-source")
			cmd.Env = []string{"APT_ETC=" + tc.aptEtc, "OS_RELEASE=testdata/os-release", "PATH=/usr/bin:/bin"}
			out, err := cmd.CombinedOutput()
			is.NoErr(err)
			is.Equal(string(out), tc.want)
		})
	}
}

func TestDeriveBackportsSourceMissing(t *testing.T) {
	is := is.New(t)
	cmd := exec.Command("bash", "install-deps.sh", "--print-backports-source")
	cmd.Env = []string{"APT_ETC=testdata/none", "OS_RELEASE=testdata/os-release", "PATH=/usr/bin:/bin"}
	out, err := cmd.CombinedOutput()
	is.True(err != nil)
	is.True(strings.Contains(string(out), "no apt source for suite 'bookworm'"))
}
