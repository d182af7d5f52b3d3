package main

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/incusexec/incusexec/executor/incus"

	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/incusexec/incusexec/netbridge"
	"github.com/matryer/is"
)

// TestSetupRestoresSubnetAndMakesCopyOnWritePool is what a new user did:
// setup with an explicit subnet and a pool that does not exist, the
// subnet changed by hand, setup again. The pool is copy-on-write where the
// host can, and setup says which it made and why; the second setup puts the
// subnet back and says so.
func TestSetupRestoresSubnetAndMakesCopyOnWritePool(t *testing.T) {
	is := is.New(t)
	d, owner := busybox(t)
	ctx := t.Context()
	cli := func(args ...string) result {
		return incusexec(t, ctx, d, "", append([]string{"--owner", owner}, args...)...)
	}
	network := incustest.UniqueName("ie")
	profile := incustest.UniqueName("prof")
	pool := incustest.UniqueName("pool")
	t.Cleanup(func() {
		if r := incusexec(t, context.Background(), d, "", "--owner", owner, "gc", "--networks"); r.code != 0 {
			t.Errorf("gc --networks: exit %d", r.code)
		}
		if err := incus.RemovePool(context.Background(), d.Client, pool, owner); err != nil {
			t.Errorf("remove pool %s: %v", pool, err)
		}
	})
	r := cli("setup", "--network", network, "--profile", profile, "--pool", pool)
	is.Equal(r.code, 0)
	want := "storage-pool " + pool + " created (driver dir: "
	if d.PoolDriver == "btrfs" { // this host can make btrfs on a loop file
		want = "storage-pool " + pool + " created (driver btrfs: copy-on-write"
	}
	is.True(strings.Contains(r.stdout, want))
	p, _, err := d.Client.GetStoragePool(pool)
	is.NoErr(err)
	is.Equal(p.Driver, d.PoolDriver)

	n, _, err := d.Client.GetNetwork(network)
	is.NoErr(err)
	subnet := n.Config["ipv4.address"] // free: setup picked it
	args := []string{"setup", "--network", network, "--profile", profile, "--pool", pool, "--subnet", subnet}
	r = cli(args...)
	is.Equal(r.code, 0)
	is.True(strings.HasPrefix(r.stdout, "nothing to change\n"))

	// By hand, as `incus network set N ipv4.address=...` would.
	used, err := netbridge.LocalUsedSubnets()
	is.NoErr(err)
	other := otherSubnet(t, network, used, subnet)
	for attempt := 1; ; attempt++ {
		n, etag, err := d.Client.GetNetwork(network)
		is.NoErr(err)
		put := n.Writable()
		put.Config["ipv4.address"] = other
		err = d.Client.UpdateNetwork(network, put, etag)
		// incusd fails a bridge update when another daemon's veth vanishes
		// meanwhile (README, Known issues): try again, as an operator would,
		// for as long as netbridge does (five tries in a second fell short
		// while another package launched fifty containers).
		if err != nil && attempt < 60 && strings.Contains(err.Error(), "does not exist") {
			time.Sleep(500 * time.Millisecond)
			continue
		}
		is.NoErr(err)
		break
	}

	r = cli(args...)
	is.Equal(r.code, 0)
	is.True(strings.Contains(r.stdout, "updated network "+network+" (ipv4.address)"))
	n, _, err = d.Client.GetNetwork(network)
	is.NoErr(err)
	is.Equal(n.Config["ipv4.address"], subnet)
}

// otherSubnet returns a free 10.x.y.1/24 other than the one in use.
func otherSubnet(t *testing.T, seed string, used []netbridge.UsedSubnet, current string) string {
	t.Helper()
	cur, err := netip.ParsePrefix(current)
	if err != nil {
		t.Fatal(err)
	}
	taken := []netip.Prefix{cur.Masked()}
	for _, u := range used {
		taken = append(taken, u.Prefix)
	}
	p, err := netbridge.PickSubnet(seed+"-drift", netip.MustParsePrefix("10.0.0.0/8"), 24, taken)
	if err != nil {
		t.Fatal(err)
	}
	return p.String()
}
