package netbridge

import (
	"fmt"
	"net/netip"
	"strings"
)

// FirewallSpec describes what a host with a default-deny nftables firewall
// must let through for a bridge.
type FirewallSpec struct {
	// Bridge is the bridge's name (required).
	Bridge string
	// IPv4 and IPv6 are the bridge's subnets (gateway address with prefix
	// length, as Network reports them); they restrict forwarded traffic to
	// the instances' own source addresses. Zero IPv6 means IPv6 off.
	IPv4, IPv6 netip.Prefix
	// Egress forwards the instances' traffic to other networks (and the
	// answers back); without it they reach the host's DHCP and DNS only.
	Egress bool
	// IntraBridge accepts forwarded traffic between instances on the
	// bridge, needed only where br_netfilter passes bridged frames through
	// the forward chain.
	IntraBridge bool
	// Trusted trusts the bridge like NixOS's trustedInterfaces: every
	// packet from an instance to the host is accepted. This lets instances
	// reach every service the host runs; do not use it for untrusted code.
	Trusted bool
}

// FirewallRules are nftables rule bodies for a host's own input and forward
// chains (what NixOS takes as networking.firewall.extraInputRules and
// extraForwardRules), plus the interfaces to trust when Trusted is set
// (networking.firewall.trustedInterfaces).
type FirewallRules struct {
	Input             []string
	Forward           []string
	TrustedInterfaces []string
}

// HostFirewall renders the rules a default-deny host needs for a bridge:
// DHCP, DNS and the ICMP that keeps them working from the instances to the
// host; forwarding of the instances' own addresses when Egress is set; and
// the answers to it. Instances' veth interfaces are ports of the bridge, so
// their traffic enters the host's IP stack on the bridge interface and needs
// no rule of its own (unless br_netfilter is loaded: see IntraBridge).
//
// Every rule opens the host a little; see the package documentation.
func HostFirewall(spec FirewallSpec) (*FirewallRules, error) {
	if err := ValidateNetworkName(spec.Bridge); err != nil {
		return nil, fmt.Errorf("host firewall: %w", err)
	}
	if spec.IPv4.IsValid() && !spec.IPv4.Addr().Is4() {
		return nil, fmt.Errorf("%w: host firewall: IPv4 %s is not an IPv4 prefix", ErrInvalid, spec.IPv4)
	}
	if spec.IPv6.IsValid() && !spec.IPv6.Addr().Is6() {
		return nil, fmt.Errorf("%w: host firewall: IPv6 %s is not an IPv6 prefix", ErrInvalid, spec.IPv6)
	}
	in := fmt.Sprintf("iifname %q", spec.Bridge)
	out := fmt.Sprintf("oifname %q", spec.Bridge)
	comment := fmt.Sprintf(" comment %q", "incusexec "+spec.Bridge)
	r := &FirewallRules{}
	if spec.Trusted {
		r.TrustedInterfaces = []string{spec.Bridge}
		r.Input = append(r.Input, in+" accept"+comment)
	} else {
		r.Input = append(r.Input,
			in+" udp dport 67 accept"+comment,
			in+" udp dport 53 accept"+comment,
			in+" tcp dport 53 accept"+comment,
			in+" icmp type { destination-unreachable, time-exceeded, parameter-problem } accept"+comment,
		)
		if spec.IPv6.IsValid() {
			r.Input = append(r.Input,
				in+" udp dport 547 accept"+comment,
				in+" icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem, nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, mld2-listener-report } accept"+comment,
			)
		}
	}
	if spec.IntraBridge {
		r.Forward = append(r.Forward, in+" "+out+" accept"+comment)
	}
	if spec.Egress {
		src4, src6 := "", ""
		if spec.IPv4.IsValid() {
			src4 = " ip saddr " + spec.IPv4.Masked().String()
		}
		if spec.IPv6.IsValid() {
			src6 = " ip6 saddr " + spec.IPv6.Masked().String()
		}
		if src4 == "" && src6 == "" {
			r.Forward = append(r.Forward, in+" accept"+comment)
		}
		if src4 != "" {
			r.Forward = append(r.Forward, in+src4+" accept"+comment)
		}
		if src6 != "" {
			r.Forward = append(r.Forward, in+src6+" accept"+comment)
		}
		r.Forward = append(r.Forward, out+" ct state established,related accept"+comment)
	}
	return r, nil
}

// Script renders the rules as an nft -f script appending them to the given
// chains of table (say "inet", "filter", "input", "forward").
func (r *FirewallRules) Script(family, table, inputChain, forwardChain string) string {
	var b strings.Builder
	for _, rule := range r.Input {
		fmt.Fprintf(&b, "add rule %s %s %s %s\n", family, table, inputChain, rule)
	}
	for _, rule := range r.Forward {
		fmt.Fprintf(&b, "add rule %s %s %s %s\n", family, table, forwardChain, rule)
	}
	return b.String()
}
