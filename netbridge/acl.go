package netbridge

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/incusexec/incusexec/executor"
	"github.com/lxc/incus/v6/shared/api"
)

// nonPublic4 and nonPublic6 are the destinations IsolationEgress rejects:
// private, shared, loopback, link-local, multicast and reserved ranges.
var (
	nonPublic4 = []string{"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
		"172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4"}
	nonPublic6 = []string{"::1/128", "fc00::/7", "fe80::/10", "ff00::/8"}
)

// aclRules returns the egress rules of an isolation ACL. Incus always lets
// instances on a bridge with ACLs reach DHCP, DNS and core ICMP on the bridge
// (its baseline rules come before the ACL's), answers to allowed traffic
// pass, and unmatched traffic is rejected; so strict isolation is an ACL
// without rules, and egress adds "reject the host and the LAN, allow the
// rest" (rejects win over allows whatever their order).
func aclRules(mode Isolation, hostAddrs []netip.Addr) []api.NetworkACLRule {
	if mode != IsolationEgress {
		return nil
	}
	rules := []api.NetworkACLRule{
		{Action: "reject", Destination: strings.Join(nonPublic4, ","), Description: "no host or LAN (IPv4)", State: "enabled"},
		{Action: "reject", Destination: strings.Join(nonPublic6, ","), Description: "no host or LAN (IPv6)", State: "enabled"},
	}
	var public []string
	for _, a := range hostAddrs {
		if isPublic(a) {
			public = append(public, netip.PrefixFrom(a, a.BitLen()).String())
		}
	}
	if len(public) > 0 {
		slices.Sort(public)
		public = slices.Compact(public)
		rules = append(rules, api.NetworkACLRule{Action: "reject", Destination: strings.Join(public, ","),
			Description: "no public address of the host", State: "enabled"})
	}
	return append(rules, api.NetworkACLRule{Action: "allow", Description: "egress to public addresses", State: "enabled"})
}

func isPublic(a netip.Addr) bool {
	for _, s := range append(slices.Clone(nonPublic4), nonPublic6...) {
		if netip.MustParsePrefix(s).Contains(a.Unmap()) {
			return false
		}
	}
	return a.IsValid()
}

// hostAddrs lists the host's own addresses from the used-subnet list.
func (m *Manager) hostAddrs() ([]netip.Addr, error) {
	used, err := m.used()
	if err != nil {
		return nil, fmt.Errorf("netbridge: list the host's addresses: %w", err)
	}
	var out []netip.Addr
	for _, u := range used {
		if u.Addr.IsValid() {
			out = append(out, u.Addr)
		}
	}
	return out, nil
}

func sameRules(a, b []api.NetworkACLRule) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		x.Normalise()
		y.Normalise()
		if x != y {
			return false
		}
	}
	return true
}

// ensureACL makes the isolation ACL of p exist with the rules of its mode.
func (m *Manager) ensureACL(p *netPlan) (*Change, error) {
	var addrs []netip.Addr
	if p.Isolation == IsolationEgress {
		var err error
		if addrs, err = m.hostAddrs(); err != nil {
			return nil, err
		}
	}
	egress := aclRules(p.Isolation, addrs)
	desc := fmt.Sprintf("incusexec %s isolation of network %s", p.Isolation, p.Name)
	for attempt := 0; attempt < 10; attempt++ {
		cur, etag, err := m.c.GetNetworkACL(p.acl)
		if isNotFound(err) {
			err = m.c.CreateNetworkACL(api.NetworkACLsPost{NetworkACLPost: api.NetworkACLPost{Name: p.acl}, NetworkACLPut: api.NetworkACLPut{
				Description: desc, Egress: egress, Ingress: []api.NetworkACLRule{},
				Config: map[string]string{executor.OwnerKey: p.owner},
			}})
			if err != nil {
				if _, _, gerr := m.c.GetNetworkACL(p.acl); gerr == nil {
					m.log.Debug("network ACL created concurrently by another writer", "acl", p.acl, "err", err)
					continue
				}
				return nil, fmt.Errorf("create network ACL %s: %w", p.acl, err)
			}
			m.log.Info("network ACL created", "acl", p.acl, "isolation", p.Isolation)
			return &Change{Kind: KindACL, Name: p.acl, Action: Created, Keys: []string{"config." + executor.OwnerKey, "description", "egress", "ingress"}}, nil
		}
		if err != nil {
			return nil, fmt.Errorf("ensure network ACL %s: %w", p.acl, err)
		}
		if o := cur.Config[executor.OwnerKey]; o != p.owner {
			return nil, fmt.Errorf("%w: network ACL %s belongs to %q, not %q", ErrNotOwned, p.acl, o, p.owner)
		}
		put := cur.Writable()
		var keys []string
		if put.Description != desc {
			put.Description = desc
			keys = append(keys, "description")
		}
		if !sameRules(put.Egress, egress) {
			put.Egress = egress
			keys = append(keys, "egress")
		}
		if len(put.Ingress) > 0 {
			put.Ingress = []api.NetworkACLRule{}
			keys = append(keys, "ingress")
		}
		if len(keys) == 0 {
			return nil, nil
		}
		err = m.c.UpdateNetworkACL(p.acl, put, etag)
		if isPreconditionFailed(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("correct network ACL %s (%s): %w", p.acl, strings.Join(keys, ", "), err)
		}
		m.log.Info("network ACL corrected", "acl", p.acl, "keys", keys)
		return &Change{Kind: KindACL, Name: p.acl, Action: Updated, Keys: keys}, nil
	}
	return nil, fmt.Errorf("ensure network ACL %s: still racing with other writers", p.acl)
}

// dropACL deletes the isolation ACL of a network whose isolation was turned
// off, if it exists, is owned and nothing else uses it.
func (m *Manager) dropACL(p *netPlan) (*Change, error) {
	cur, _, err := m.c.GetNetworkACL(p.acl)
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up network ACL %s: %w", p.acl, err)
	}
	if cur.Config[executor.OwnerKey] != p.owner || len(cur.UsedBy) > 0 {
		return nil, nil
	}
	if err := m.c.DeleteNetworkACL(p.acl); err != nil && !isNotFound(err) {
		return nil, fmt.Errorf("delete unused network ACL %s: %w", p.acl, err)
	}
	m.log.Info("network ACL deleted", "acl", p.acl)
	return &Change{Kind: KindACL, Name: p.acl, Action: Deleted}, nil
}
