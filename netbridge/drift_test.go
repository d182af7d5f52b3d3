package netbridge_test

import (
	"crypto/rand"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/incusexec/incusexec/netbridge"
	incus "github.com/lxc/incus/v6/client"
	"github.com/lxc/incus/v6/shared/api"
	"github.com/matryer/is"
)

// TestEnsureRestoresExplicitKeys changes, behind Ensure's back, every owned
// key whose wanted value the spec states explicitly (the IPv4 subnet, the
// DHCP ranges, the IPv6 address and NAT, the isolation ACL) and checks that
// Ensure puts each back and reports it.
func TestEnsureRestoresExplicitKeys(t *testing.T) {
	is := is.New(t)
	d := incustest.Shared(t)
	ctx := testContext(t)
	m := newManager(t, d)
	prefix := uniquePrefix()
	cleanupOwner(t, d, m, prefix)

	var r [6]byte
	_, _ = rand.Read(r[:])
	ula := func(b byte) netip.Prefix {
		return netip.MustParsePrefix(fmt.Sprintf("fd%02x:%02x%02x:%02x%02x:%02x%02x::1/64", r[0], r[1], r[2], r[3], r[4], r[5], b))
	}
	// Let Ensure find a free 10.x.y.0/24, then state it explicitly.
	first, err := m.Ensure(ctx, netbridge.NetworkSpec{Prefix: prefix, IPv6: true, IPv6Address: ula(1)})
	is.NoErr(err)
	gw := first.IPv4
	at := func(p netip.Prefix, host byte) netip.Addr {
		a := p.Masked().Addr().As4()
		a[3] = host
		return netip.AddrFrom4(a)
	}
	spec := netbridge.NetworkSpec{Prefix: prefix, IPv4: gw, IPv6: true, IPv6Address: ula(1),
		DHCPRanges: []netbridge.DHCPRange{{First: at(gw, 10), Last: at(gw, 50)}}, Isolation: netbridge.IsolationStrict}
	n, err := m.Ensure(ctx, spec)
	is.NoErr(err)
	is.Equal(n.IPv4, gw)
	again, err := m.Ensure(ctx, spec)
	is.NoErr(err)
	is.Equal(len(again.Changes), 0)

	// Another free subnet to drift to.
	used, err := netbridge.LocalUsedSubnets()
	is.NoErr(err)
	var taken []netip.Prefix
	for _, u := range used {
		taken = append(taken, u.Prefix)
	}
	other, err := netbridge.PickSubnet(prefix+"drift", netip.MustParsePrefix("10.0.0.0/8"), 24, append(taken, gw.Masked()))
	is.NoErr(err)

	// By hand, as `incus network set` would.
	updateByHand(t, d.Client, n.Name, func(put *api.NetworkPut) {
		put.Config["ipv4.address"] = other.String()
		put.Config["ipv4.dhcp.ranges"] = at(other, 100).String() + "-" + at(other, 120).String()
		put.Config["ipv6.address"] = ula(2).String()
		put.Config["ipv6.nat"] = "true"
		delete(put.Config, "security.acls")
	})

	fixed, err := m.Ensure(ctx, spec)
	is.NoErr(err)
	is.Equal(fixed.IPv4, gw)
	is.Equal(fixed.IPv6, ula(1))
	is.Equal(len(fixed.Changes), 1)
	is.Equal(fixed.Changes[0].Action, netbridge.Updated)
	is.Equal(fixed.Changes[0].Keys, []string{"ipv4.address", "ipv4.dhcp.ranges", "ipv6.address", "ipv6.nat", "security.acls"})
	got, _, err := d.Client.GetNetwork(n.Name)
	is.NoErr(err)
	is.Equal(got.Config["ipv4.address"], gw.String())
	is.Equal(got.Config["ipv4.dhcp.ranges"], spec.DHCPRanges[0].String())
	is.Equal(got.Config["ipv6.address"], ula(1).String())
	is.Equal(got.Config["ipv6.nat"], "false")
	is.Equal(got.Config["security.acls"], netbridge.ACLName(n.Name))

	final, err := m.Ensure(ctx, spec)
	is.NoErr(err)
	is.Equal(len(final.Changes), 0)
}

// updateByHand edits network name as an operator would with `incus network
// set`. incusd 6.0.4 fails a bridge update when another daemon's veth or
// bridge vanishes while it lists the host's links (README, Known issues):
// the operator tries again then, and so does this, for as long as netbridge
// does (examples/incusexec's drift test saw five tries in a second fall
// short while another package launched fifty containers).
func updateByHand(t *testing.T, c incus.InstanceServer, name string, edit func(*api.NetworkPut)) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		cur, etag, err := c.GetNetwork(name)
		if err != nil {
			t.Fatalf("get network %s: %v", name, err)
		}
		put := cur.Writable()
		edit(&put)
		err = c.UpdateNetwork(name, put, etag)
		if err != nil && attempt < 60 && netbridge.IsVanishedLink(err) {
			t.Logf("update of %s by hand, attempt %d: %v", name, attempt, err)
			time.Sleep(500 * time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatalf("update of %s by hand: %v", name, err)
		}
		return
	}
}
