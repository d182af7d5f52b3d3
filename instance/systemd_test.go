package instance_test

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/instance"
	"github.com/matryer/is"
)

func TestDebianSystemdReadyAndUseradd(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	d, m, _ := setup(t, instance.Config{StopGrace: 20 * time.Second})
	image := d.DebianImage(t)
	profile := d.DebianProfile(t)
	in := launch(t, m, instance.Spec{
		Image: image, Profiles: []string{profile}, Ephemeral: true,
		Ready: instance.Ready{Systemd: true, NIC: "host0", Family: "inet", Timeout: time.Minute},
	})
	var out bytes.Buffer
	code, err := in.Exec(ctxFor(t, time.Minute), executor.Cmd{Args: []string{"systemctl", "is-system-running"}, Stdout: &out})
	is.NoErr(err)
	state := strings.TrimSpace(out.String())
	is.True(state == "running" || state == "degraded") // booted, as WaitReady said
	t.Logf("systemd %s (exit %d)", state, code)

	// Debian has useradd: a Debusine-style system user.
	out.Reset()
	code, err = in.Exec(ctxFor(t, time.Minute), executor.Cmd{
		Args: []string{"sh", "-c", "id -un; id -u; echo $HOME; test -d $HOME && stat -c %U $HOME"},
		User: "_debusine", Stdout: &out,
	})
	is.NoErr(err)
	is.Equal(code, 0)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	is.Equal(len(lines), 4)
	is.Equal(lines[0], "_debusine")
	uid, err := strconv.Atoi(lines[1])
	is.NoErr(err)
	is.True(uid > 0 && uid < 1000) // a system user, made by useradd
	is.Equal(lines[2], "/home/_debusine")
	is.Equal(lines[3], "_debusine")

	// systemd halts on the graceful stop; the ephemeral instance is gone.
	is.NoErr(in.Stop(ctxFor(t, time.Minute)))
	names, err := m.List(ctxFor(t, time.Minute))
	is.NoErr(err)
	is.Equal(len(names), 0)
}
