package main

import (
	"context"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/lxc/incus/v6/shared/api"
	"github.com/matryer/is"
)

// TestVirtServerOpenWithoutOutputDevice: in a project that allows no disk
// device of a host path (as incus-user's projects do), the testbed cannot
// have its output directory; open creates it without, its commands'
// output comes through the server's recorded files, and nothing is left.
func TestVirtServerOpenWithoutOutputDevice(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	d := incustest.Shared(t)
	image := d.DebianBuildImage(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	project := incustest.UniqueName("avsrestricted")
	is.NoErr(d.Client.CreateProject(api.ProjectsPost{Name: project, ProjectPut: api.ProjectPut{Config: map[string]string{
		"features.images": "false", // the default project's
		"restricted":      "true", "restricted.devices.disk": "managed",
	}}}))
	pc := d.Client.UseProject(project)
	// A restricted project has profiles of its own: the Debian profile's
	// devices, the pool's root disk and the bridge's NIC, are allowed.
	debian, _, err := d.Client.GetProfile(d.DebianProfile(t))
	is.NoErr(err)
	profile := "debian"
	is.NoErr(pc.CreateProfile(api.ProfilesPost{Name: profile, ProfilePut: api.ProfilePut{Devices: debian.Devices}}))
	m, err := instance.New(pc, instance.Config{Owner: incustest.UniqueName("avs")})
	is.NoErr(err)
	t.Cleanup(func() {
		// After a failure, what the server left goes first.
		if _, err := m.GC(context.Background(), instance.GCOptions{}); err != nil {
			t.Errorf("gc: %v", err)
		}
		m.Close()
		if err := pc.DeleteProfile(profile); err != nil {
			t.Errorf("delete profile %s: %v", profile, err)
		}
		if err := d.Client.DeleteProject(project); err != nil {
			t.Errorf("delete project %s: %v", project, err)
		}
	})

	tmp := t.TempDir()
	srv := startServer(ctx, t, []string{"TMPDIR=" + tmp}, filepath.Join(serverOnPath(t), virtServerName),
		"--socket="+d.Socket, "--project="+project, "--owner="+m.Owner(), "-d", image, "--", "--profile", profile)
	ask := srv.ask
	ask("")
	ask("open")
	argv := parseExecuteCommand(t, "ok "+ask("print-execute-command"))
	c := exec.Command(argv[0], append(argv[1:], "sh", "-c", "echo out; echo err >&2; exit 3")...)
	var stdout, stderr strings.Builder
	c.Stdout, c.Stderr = &stdout, &stderr
	is.Equal(exitCode(c.Run()), 3)
	is.Equal(stdout.String(), "out\n")
	is.Equal(stderr.String(), "err\n")
	// Through the server: the testbed keeps its small recorded output.
	name := argv[len(argv)-2]
	resp, _, err := pc.RawQuery(http.MethodGet, "/1.0/instances/"+name+"/logs/exec-output?project="+project, nil, "")
	is.NoErr(err)
	var files []string
	is.NoErr(resp.MetadataAsStruct(&files))
	is.True(len(files) > 0)
	is.NoErr(srv.closeAndQuit())
	is.True(strings.Contains(srv.logs.String(), "cannot create the testbed with its output directory")) // the fallback
	is.Equal(len(waitGone(ctx, t, m)), 0)
	left, err := filepath.Glob(filepath.Join(tmp, "incusexec-output-*"))
	is.NoErr(err)
	is.Equal(len(left), 0)
}
