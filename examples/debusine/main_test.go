package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/imagebuild"
	"github.com/incusexec/incusexec/imagebuild/imagetest"
	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/matryer/is"
)

func TestMain(m *testing.M) { incustest.Main(m) }

// TestDebusine runs the example on a private daemon with the cached Debian
// tarball, and checks the results it pulled, what it printed, and that it
// left nothing behind.
func TestDebusine(t *testing.T) {
	is := is.New(t)
	d := incustest.Shared(t)
	tarball := incustest.DebianTarball(t, imagetest.HostSuite())
	owner := incustest.UniqueName("debusine")
	id := incustest.UniqueName("debusine-test")
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), []string{"-socket", d.Socket, "-tarball", tarball, "-id", id, "-pool", d.Pool, "-owner", owner, "-out", out}, &stdout, &stderr)
	t.Logf("stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	is.Equal(code, 0)

	hello, err := os.ReadFile(filepath.Join(out, "usr", "bin", "hello"))
	is.NoErr(err)
	is.Equal(string(hello), "#!/bin/sh\necho 'Hello, Debusine!'\n")
	buildinfo, err := os.ReadFile(filepath.Join(out, "hello_1.0-1.buildinfo"))
	is.NoErr(err)
	is.True(strings.Contains(string(buildinfo), "Built-By: _debusine (uid "))
	is.True(strings.Contains(string(buildinfo), "Environment: DEB_BUILD_OPTIONS=nocheck"))
	_, err = os.Stat(filepath.Join(out, "hello_1.0-1.tar.gz"))
	is.NoErr(err)

	for _, want := range []string{
		"| Hello, Debusine!",
		"build as _debusine exited with 0",
		"statistics: cpu_count=",
		"autopkgtest-virt-incus " + imagebuild.AliasPrefix + id + " -- --profile debusine",
		"being ephemeral, it is gone",
		"cleaned up: image " + imagebuild.AliasPrefix + id + ", profile debusine, network debusine-br",
	} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	insts, err := d.Client.GetInstancesWithFilter("", []string{"config." + executor.OwnerKey + "=" + owner})
	is.NoErr(err)
	is.Equal(len(insts), 0)
	_, _, err = d.Client.GetImageAlias(imagebuild.AliasPrefix + id)
	is.True(err != nil)
	profiles, err := d.Client.GetProfileNames()
	is.NoErr(err)
	is.True(!slices.Contains(profiles, "debusine"))
	nets, err := d.Client.GetNetworkNames()
	is.NoErr(err)
	is.True(!slices.Contains(nets, "debusine-br"))
}
