package netbridge_test

import (
	"context"
	"fmt"
	"log"
	"net/netip"

	"github.com/incusexec/incusexec/netbridge"
	incus "github.com/lxc/incus/v6/client"
)

func ExampleBridgeName() {
	name, err := netbridge.BridgeName("ism")
	fmt.Println(name, err)
	_, err = netbridge.BridgeName("averylongprefix")
	fmt.Println(err)
	// Output:
	// ism-br <nil>
	// netbridge: invalid specification: prefix "averylongprefix" is 15 bytes, longer than 12 (the bridge name must fit the 15-byte interface limit)
}

func ExampleHostFirewall() {
	rules, err := netbridge.HostFirewall(netbridge.FirewallSpec{
		Bridge: "ism-br",
		IPv4:   netip.MustParsePrefix("10.42.0.1/24"),
		Egress: true,
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(rules.Script("inet", "filter", "input", "forward"))
	// Output:
	// add rule inet filter input iifname "ism-br" udp dport 67 accept comment "incusexec ism-br"
	// add rule inet filter input iifname "ism-br" udp dport 53 accept comment "incusexec ism-br"
	// add rule inet filter input iifname "ism-br" tcp dport 53 accept comment "incusexec ism-br"
	// add rule inet filter input iifname "ism-br" icmp type { destination-unreachable, time-exceeded, parameter-problem } accept comment "incusexec ism-br"
	// add rule inet filter forward iifname "ism-br" ip saddr 10.42.0.0/24 accept comment "incusexec ism-br"
	// add rule inet filter forward oifname "ism-br" ct state established,related accept comment "incusexec ism-br"
}

// A Debusine-style worker makes sure of its bridge and profile at start-up,
// then launches instances with the profile.
func ExampleManager_Ensure() {
	c, err := incus.ConnectIncusUnix("", nil)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	m := netbridge.New(c, netbridge.Options{})
	n, err := m.Ensure(ctx, netbridge.NetworkSpec{Prefix: "debusine", NAT: true})
	if err != nil {
		log.Fatal(err)
	}
	p, err := m.EnsureProfile(ctx, netbridge.DebusineProfile("debusine", n.Name, "default"))
	if err != nil {
		log.Fatal(err)
	}
	for _, c := range append(n.Changes, p.Changes...) {
		log.Print(c) // e.g. "created network debusine-br (bridge.mtu, ...)"
	}
	fmt.Println("instances get an address in", n.IPv4.Masked(), "with profile", p.Name)
}
