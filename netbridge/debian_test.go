package netbridge_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/incusexec/incusexec/netbridge"
	"github.com/lxc/incus/v6/shared/api"
	"github.com/matryer/is"
)

// TestDebusineProfileGivesHost0Lease launches the Debian systemd image with
// nothing but DebusineProfile on an ensured bridge: systemd-networkd gets a
// lease on host0 from the bridge, with sysfs mounted as raw.lxc asks.
func TestDebusineProfileGivesHost0Lease(t *testing.T) {
	is := is.New(t)
	d := incustest.Shared(t)
	alias := d.DebianImage(t)
	ctx := testContext(t)
	m := newManager(t, d)
	prefix := uniquePrefix()
	cleanupOwner(t, d, m, prefix)

	n, err := m.Ensure(ctx, netbridge.NetworkSpec{Prefix: prefix})
	is.NoErr(err)
	spec := netbridge.DebusineProfile(prefix, n.Name, d.Pool)
	spec.Name = prefix + "-debusine"
	_, err = m.EnsureProfile(ctx, spec)
	is.NoErr(err)

	name := incustest.UniqueName("nbd-")
	op, err := d.Client.CreateInstance(api.InstancesPost{Name: name, Type: api.InstanceTypeContainer,
		Source:      api.InstanceSource{Type: "image", Alias: alias},
		InstancePut: api.InstancePut{Profiles: []string{spec.Name}},
		Start:       true,
	})
	is.NoErr(err)
	is.NoErr(op.WaitContext(ctx))
	t.Cleanup(func() { deleteInstance(d.Client, name) })

	// The image's root directory must be traversable, or systemd-networkd
	// (running as its own user) cannot even chdir to it; a tarball whose
	// "./" entry is 0700 does that, and no profile can help.
	var out, stderr bytes.Buffer
	code, err := execIn(ctx, d.Client, name, []string{"stat", "-c", "%a", "/"}, &out, &stderr)
	is.NoErr(err)
	is.Equal(code, 0)
	is.Equal(strings.TrimSpace(out.String()), "755") // root traversable by networkd's user

	addr := waitIPv4(ctx, t, d.Client, name, "host0")
	is.True(n.IPv4.Masked().Contains(addr)) // leased from the ensured bridge
}
