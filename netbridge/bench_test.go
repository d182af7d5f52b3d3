package netbridge_test

import (
	"context"
	"os"
	"os/exec"
	"testing"

	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/incusexec/incusexec/netbridge"
)

// BenchmarkEnsure compares, side by side on one daemon, what a host pays to
// make sure of its bridge: netbridge's Ensure when nothing needs doing
// against a bare GET through the API and `incus network show`; and creating
// and removing a bridge through netbridge against the incus CLI.
//
//	go test -run '^$' -bench BenchmarkEnsure -benchtime 20x ./netbridge/
func BenchmarkEnsure(b *testing.B) {
	d := incustest.Shared(b)
	ctx := context.Background()
	m := netbridge.New(d.Client, netbridge.Options{})
	prefix := uniquePrefix()
	spec := netbridge.NetworkSpec{Prefix: prefix, MTU: 1400}
	n, err := m.Ensure(ctx, spec)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _, _ = m.Cleanup(ctx, prefix) })
	cli := func(b *testing.B, args ...string) {
		cmd := exec.Command("incus", args...)
		cmd.Env = append(os.Environ(), "INCUS_DIR="+d.Dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("incus %v: %v: %s", args, err, out)
		}
	}

	b.Run("check/netbridge-Ensure-noop", func(b *testing.B) {
		for b.Loop() {
			if r, err := m.Ensure(ctx, spec); err != nil || len(r.Changes) > 0 {
				b.Fatal(err, r.Changes)
			}
		}
	})
	b.Run("check/api-GetNetwork", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := d.Client.GetNetwork(n.Name); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("check/cli-network-show", func(b *testing.B) {
		for b.Loop() {
			cli(b, "network", "show", n.Name)
		}
	})

	p2 := uniquePrefix()
	b.Run("create+remove/netbridge", func(b *testing.B) {
		for b.Loop() {
			if _, err := m.Ensure(ctx, netbridge.NetworkSpec{Prefix: p2}); err != nil {
				b.Fatal(err)
			}
			if _, err := m.Cleanup(ctx, p2); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The CLI with the same subnet netbridge picked, NAT and IPv6 off.
	gw, err := netbridge.PickSubnet(p2+"-br", netbridge.DefaultAutoRange, 24, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("create+remove/cli", func(b *testing.B) {
		for b.Loop() {
			cli(b, "network", "create", p2+"-br", "ipv4.address="+gw.String(), "ipv4.nat=false", "ipv6.address=none")
			cli(b, "network", "delete", p2+"-br")
		}
	})
}
