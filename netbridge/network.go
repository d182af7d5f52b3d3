package netbridge

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/lxc/incus/v6/shared/api"
)

// Isolation says what instances on a bridge may reach through the host.
type Isolation int

const (
	// IsolationNone applies no ACL: instances reach whatever the host
	// forwards to (with NAT on, the LAN and the internet).
	IsolationNone Isolation = iota
	// IsolationStrict lets instances reach DHCP and DNS on the bridge and
	// nothing else on the host, the LAN or beyond; nothing outside reaches
	// them. For hosts that run untrusted code.
	IsolationStrict
	// IsolationEgress is IsolationStrict plus outgoing connections to
	// public addresses (to fetch packages, say): private, link-local,
	// shared and multicast ranges and the host's own public addresses stay
	// unreachable.
	IsolationEgress
)

func (i Isolation) String() string {
	switch i {
	case IsolationNone:
		return "none"
	case IsolationStrict:
		return "strict"
	case IsolationEgress:
		return "egress"
	}
	return "Isolation(" + strconv.Itoa(int(i)) + ")"
}

// DHCPRange is an inclusive range of IPv4 addresses handed out by DHCP.
type DHCPRange struct {
	First, Last netip.Addr
}

func (r DHCPRange) String() string { return r.First.String() + "-" + r.Last.String() }

// NetworkSpec describes a managed bridge. The zero value of an optional
// field leaves the matching Incus key alone (it is not owned).
type NetworkSpec struct {
	// Prefix is the host-chosen prefix the bridge is named after
	// (BridgeName). Ignored when Name is set.
	Prefix string
	// Name is the bridge name; empty derives it from Prefix.
	Name string
	// Owner goes into the user.incusexec.owner label; empty means Prefix.
	Owner string
	// Description defaults to "incusexec bridge of <owner>".
	Description string

	// IPv4 is the gateway address with the prefix length, as in
	// 10.42.0.1/24. Zero picks a free subnet when the bridge is created
	// (and keeps whatever the bridge has later).
	IPv4 netip.Prefix
	// AutoRange and AutoBits bound automatic subnets; zero means
	// DefaultAutoRange and DefaultAutoBits.
	AutoRange netip.Prefix
	AutoBits  int
	// NAT masquerades the instances' traffic leaving the host (ipv4.nat,
	// and ipv6.nat with IPv6). Owned: false turns NAT off.
	NAT bool
	// IPv6 turns IPv6 on (an address from IPv6Address, or a ULA /64 derived
	// from the bridge name); off sets ipv6.address=none. Owned.
	IPv6        bool
	IPv6Address netip.Prefix
	// DHCPRanges restrict the addresses DHCP hands out (ipv4.dhcp.ranges);
	// they need an explicit IPv4 subnet and must lie inside it.
	DHCPRanges []DHCPRange
	// MTU sets bridge.mtu when non-zero.
	MTU int
	// Isolation applies the isolation ACL ACLName(Name) to the bridge.
	Isolation Isolation
}

// Network is an ensured bridge.
type Network struct {
	Name  string
	Owner string
	// IPv4 is the gateway address with prefix length; IPv6 likewise, zero
	// when IPv6 is off.
	IPv4, IPv6 netip.Prefix
	// ACL is the isolation ACL applied to it, "" for none.
	ACL string
	// Changes lists what the call changed, empty when everything already
	// was as specified.
	Changes []Change
}

// netPlan is a validated NetworkSpec.
type netPlan struct {
	NetworkSpec
	owner, desc, acl string
}

func (s NetworkSpec) plan() (*netPlan, error) {
	p := &netPlan{NetworkSpec: s}
	if p.Name == "" {
		name, err := BridgeName(s.Prefix)
		if err != nil {
			return nil, err
		}
		p.Name = name
	} else if err := ValidateNetworkName(p.Name); err != nil {
		return nil, err
	}
	p.owner = s.Owner
	if p.owner == "" {
		p.owner = s.Prefix
	}
	if err := validateOwner(p.owner); err != nil {
		return nil, fmt.Errorf("network %s: %w", p.Name, err)
	}
	p.desc = s.Description
	if p.desc == "" {
		p.desc = "incusexec bridge of " + p.owner
	}
	p.acl = ACLName(p.Name)
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: network %s: "+format, append([]any{ErrInvalid, p.Name}, args...)...)
	}
	if p.IPv4.IsValid() {
		if !p.IPv4.Addr().Is4() || p.IPv4.Bits() < 8 || p.IPv4.Bits() > 30 {
			return nil, bad("IPv4 %s: want an IPv4 gateway address with a /8 to /30 prefix length", p.IPv4)
		}
		if a := p.IPv4.Addr(); a == p.IPv4.Masked().Addr() || a == lastAddr(p.IPv4) {
			return nil, bad("IPv4 %s: the gateway must be a host address of the subnet, not its network or broadcast address", p.IPv4)
		}
	}
	if p.AutoRange.IsValid() || p.AutoBits != 0 {
		if p.AutoRange == (netip.Prefix{}) {
			p.AutoRange = DefaultAutoRange
		}
		if p.AutoBits == 0 {
			p.AutoBits = DefaultAutoBits
		}
		if !p.AutoRange.Addr().Is4() || p.AutoBits < p.AutoRange.Bits() || p.AutoBits > 30 {
			return nil, bad("automatic subnets /%d in %s: want an IPv4 range and a length between its own and /30", p.AutoBits, p.AutoRange)
		}
	} else {
		p.AutoRange, p.AutoBits = DefaultAutoRange, DefaultAutoBits
	}
	if p.IPv6Address.IsValid() {
		if !p.IPv6 {
			return nil, bad("IPv6Address %s given with IPv6 off", p.IPv6Address)
		}
		if p.IPv6Address.Addr().Is4() || p.IPv6Address.Addr().Is4In6() || p.IPv6Address.Bits() < 8 || p.IPv6Address.Bits() > 126 {
			return nil, bad("IPv6Address %s: want an IPv6 gateway address with a prefix length", p.IPv6Address)
		}
	}
	if len(p.DHCPRanges) > 0 && !p.IPv4.IsValid() {
		return nil, bad("DHCP ranges need an explicit IPv4 subnet")
	}
	for _, r := range p.DHCPRanges {
		if !r.First.Is4() || !r.Last.Is4() || r.Last.Less(r.First) {
			return nil, bad("DHCP range %s: want two IPv4 addresses, the first not above the last", r)
		}
		if !p.IPv4.Contains(r.First) || !p.IPv4.Contains(r.Last) {
			return nil, bad("DHCP range %s lies outside %s", r, p.IPv4.Masked())
		}
	}
	if p.MTU != 0 && (p.MTU < 1280 || p.MTU > 16384) {
		return nil, bad("MTU %d: want 1280 to 16384", p.MTU)
	}
	if p.Isolation < IsolationNone || p.Isolation > IsolationEgress {
		return nil, bad("unknown isolation %d", int(p.Isolation))
	}
	return p, nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	n := binary.BigEndian.Uint32(p.Masked().Addr().AsSlice())
	return addr4(n | (1<<(32-p.Bits()) - 1))
}

// ula6 derives a unique local /64 for a bridge without an explicit IPv6
// address, stable across calls and processes.
func ula6(name string) netip.Prefix {
	h := fnv.New64a()
	h.Write([]byte("incusexec/" + name))
	s := h.Sum64()
	var a [16]byte
	a[0] = 0xfd
	binary.BigEndian.PutUint64(a[1:9], s) // 40-bit global ID and 16-bit subnet
	a[6], a[7] = 0, 0
	a[15] = 1
	return netip.PrefixFrom(netip.AddrFrom16(a), 64)
}

// ownedConfig returns the keys p owns with their wanted values given the
// bridge's current config (nil when creating) and, when creating without an
// explicit IPv4, the picked gateway; an empty value means the key must be
// absent. Every wanted value comes from the spec, never from cur: an owned
// key that drifted must come back.
func (p *netPlan) ownedConfig(cur map[string]string, picked netip.Prefix) map[string]string {
	want := map[string]string{
		executor.OwnerKey: p.owner,
		"ipv4.nat":        strconv.FormatBool(p.NAT),
	}
	switch {
	case p.IPv4.IsValid():
		want["ipv4.address"] = p.IPv4.String()
	case cur == nil:
		want["ipv4.address"] = picked.String()
	}
	if len(p.DHCPRanges) > 0 {
		rs := make([]string, len(p.DHCPRanges))
		for i, r := range p.DHCPRanges {
			rs[i] = r.String()
		}
		want["ipv4.dhcp.ranges"] = strings.Join(rs, ",")
	}
	switch {
	case !p.IPv6:
		want["ipv6.address"] = "none"
	case p.IPv6Address.IsValid():
		want["ipv6.address"] = p.IPv6Address.String()
	case cur == nil || cur["ipv6.address"] == "" || cur["ipv6.address"] == "none":
		want["ipv6.address"] = ula6(p.Name).String()
	}
	if p.IPv6 {
		want["ipv6.nat"] = strconv.FormatBool(p.NAT)
	}
	if p.MTU != 0 {
		want["bridge.mtu"] = strconv.Itoa(p.MTU)
	}
	// security.acls is a list shared with others: only our entry is owned.
	var acls []string
	for _, a := range strings.Split(cur["security.acls"], ",") {
		if a = strings.TrimSpace(a); a != "" && a != p.acl {
			acls = append(acls, a)
		}
	}
	if p.Isolation != IsolationNone {
		acls = append(acls, p.acl)
	}
	if strings.Join(acls, ",") != cur["security.acls"] {
		want["security.acls"] = strings.Join(acls, ",")
	}
	return want
}

// Ensure makes the bridge exist as spec says: it creates what is missing
// (the isolation ACL, then the bridge, per cluster member first on a
// cluster), corrects owned keys that drifted, leaves other keys alone and
// reports what it changed. Bad input, a subnet overlapping a used one, or an
// object of the same name it does not own, are errors before anything is
// created or changed.
func (m *Manager) Ensure(ctx context.Context, spec NetworkSpec) (*Network, error) {
	p, err := spec.plan()
	if err != nil {
		return nil, err
	}
	var changes []Change
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("ensure network %s: %w", p.Name, err)
		}
		if attempt == 10 {
			return nil, fmt.Errorf("ensure network %s: still racing with other writers after %d attempts", p.Name, attempt)
		}
		cur, etag, err := m.c.GetNetwork(p.Name)
		if isNotFound(err) || (err == nil && isUnfinished(cur)) {
			var n *Network
			n, err = m.createNetwork(ctx, p, cur)
			if errors.Is(err, errLostRace) {
				changes = append(changes, n.Changes...)
				continue
			}
			if err != nil {
				return nil, err
			}
			n.Changes = append(changes, n.Changes...)
			return n, nil
		}
		if err != nil {
			return nil, fmt.Errorf("ensure network %s: %w", p.Name, err)
		}
		if err := p.checkOwned(cur); err != nil {
			return nil, err
		}
		n, ch, err := m.correctNetwork(ctx, p, cur, etag)
		changes = append(changes, ch...)
		if isPreconditionFailed(err) || errors.Is(err, errLostRace) {
			continue // someone else changed it meanwhile: look again
		}
		if err != nil {
			return nil, err
		}
		n.Changes = changes
		return n, nil
	}
}

// errLostRace says that another writer created the object first.
var errLostRace = errors.New("lost creation race")

// isUnfinished reports a cluster network defined on members but never
// instantiated, as a crash between the two steps leaves it; its config
// (and so the owner label) only arrives with the second step.
func isUnfinished(n *api.Network) bool {
	return n.Status == api.NetworkStatusPending && n.Config[executor.OwnerKey] == ""
}

func (p *netPlan) checkOwned(cur *api.Network) error {
	switch {
	case !cur.Managed:
		return fmt.Errorf("%w: network %s is a host interface, not a network managed by Incus", ErrNotOwned, p.Name)
	case cur.Type != "bridge":
		return fmt.Errorf("%w: network %s is of type %s, not a bridge", ErrNotOwned, p.Name, cur.Type)
	case cur.Config[executor.OwnerKey] != p.owner:
		if o := cur.Config[executor.OwnerKey]; o != "" {
			return fmt.Errorf("%w: network %s belongs to %q, not %q", ErrNotOwned, p.Name, o, p.owner)
		}
		return fmt.Errorf("%w: network %s has no %s label (it was not created by incusexec)", ErrNotOwned, p.Name, executor.OwnerKey)
	}
	return nil
}

// usedSubnets lists the subnets a bridge named self must not overlap: the
// host's (except self's own) and other Incus networks'.
func (m *Manager) usedSubnets(self string) ([]UsedSubnet, error) {
	host, err := m.used()
	if err != nil {
		return nil, fmt.Errorf("netbridge: list the host's subnets: %w", err)
	}
	var out []UsedSubnet
	for _, u := range host {
		if u.Interface != self {
			out = append(out, u)
		}
	}
	nets, err := m.c.GetNetworks()
	if err != nil {
		return nil, fmt.Errorf("netbridge: list networks: %w", err)
	}
	for _, n := range nets {
		if !n.Managed || n.Name == self {
			continue
		}
		for _, key := range []string{"ipv4.address", "ipv4.routes", "ipv4.ovn.ranges"} {
			for _, v := range strings.Split(n.Config[key], ",") {
				if pre, err := netip.ParsePrefix(strings.TrimSpace(v)); err == nil && pre.Addr().Is4() {
					out = append(out, UsedSubnet{Prefix: pre.Masked(), What: "Incus network " + n.Name + " (" + key + ")"})
				}
			}
		}
	}
	return out, nil
}

func checkFree(name string, want netip.Prefix, used []UsedSubnet) error {
	for _, u := range used {
		if u.Prefix.IsValid() && u.Prefix.Bits() > 0 && u.Prefix.Overlaps(want.Masked()) {
			return fmt.Errorf("%w: network %s: subnet %s overlaps %s (%s)", ErrSubnetInUse, name, want.Masked(), u.Prefix, u.What)
		}
	}
	return nil
}

func (m *Manager) createNetwork(ctx context.Context, p *netPlan, unfinished *api.Network) (*Network, error) {
	createMu.Lock()
	defer createMu.Unlock()
	used, err := m.usedSubnets(p.Name)
	if err != nil {
		return nil, err
	}
	ipv4 := p.IPv4
	if ipv4.IsValid() {
		if err := checkFree(p.Name, ipv4, used); err != nil {
			return nil, err
		}
	} else {
		prefixes := make([]netip.Prefix, len(used))
		for i, u := range used {
			prefixes[i] = u.Prefix
		}
		if ipv4, err = PickSubnet(p.Name, p.AutoRange, p.AutoBits, prefixes); err != nil {
			return nil, fmt.Errorf("network %s: %w", p.Name, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("ensure network %s: %w", p.Name, err)
	}
	n := &Network{Name: p.Name, Owner: p.owner, IPv4: ipv4}
	if p.Isolation != IsolationNone {
		ch, err := m.ensureACL(p)
		if err != nil {
			return nil, err
		}
		n.ACL = p.acl
		if ch != nil {
			n.Changes = append(n.Changes, *ch)
		}
	}
	cfg := map[string]string{}
	for k, v := range p.ownedConfig(nil, ipv4) {
		if v != "" {
			cfg[k] = v
		}
	}
	post := api.NetworksPost{Name: p.Name, Type: "bridge", NetworkPut: api.NetworkPut{Config: cfg, Description: p.desc}}
	for attempt := 1; ; attempt++ {
		err = m.createNetworkObject(post)
		if err == nil {
			break
		}
		// Lost a race with another process, or a real failure?
		if cur, _, gerr := m.c.GetNetwork(p.Name); gerr == nil && !isUnfinished(cur) {
			m.log.Debug("network created concurrently by another writer", "network", p.Name, "err", err)
			return n, errLostRace
		}
		if again(err, attempt) && pause(ctx, attempt) == nil {
			m.log.Warn("creating network failed; retrying", "network", p.Name, "attempt", attempt, "err", err)
			continue
		}
		if unfinished == nil {
			m.dropNewACL(p, n.Changes)
		}
		return nil, fmt.Errorf("create network %s: %w", p.Name, err)
	}
	if v := cfg["ipv6.address"]; v != "none" {
		n.IPv6, _ = netip.ParsePrefix(v)
	}
	m.log.Info("network created", "network", p.Name, "ipv4", ipv4, "owner", p.owner)
	n.Changes = append(n.Changes, Change{Kind: KindNetwork, Name: p.Name, Action: Created, Keys: sortedKeys(cfg)})
	return n, nil
}

// createNetworkObject creates a network; on a cluster it first defines it
// on every member, as Incus requires, then instantiates it everywhere.
func (m *Manager) createNetworkObject(post api.NetworksPost) error {
	if m.c.IsClustered() {
		t, ok := m.c.(targeter)
		if !ok {
			return fmt.Errorf("netbridge: the daemon is clustered and the client cannot target members (no UseTarget)")
		}
		members, err := m.c.GetClusterMemberNames()
		if err != nil {
			return fmt.Errorf("list cluster members: %w", err)
		}
		for _, member := range members {
			// A bridge has no member-specific keys of ours; Incus
			// rejects any other key here. The description goes here:
			// Incus keeps the one of the pending definition and ignores
			// the one of the cluster-wide creation.
			err := t.UseTarget(member).CreateNetwork(api.NetworksPost{Name: post.Name, Type: post.Type,
				NetworkPut: api.NetworkPut{Description: post.Description}})
			if err != nil && !api.StatusErrorCheck(err, 409) {
				return fmt.Errorf("define on member %s: %w", member, err)
			}
		}
	}
	return m.c.CreateNetwork(post)
}

// dropNewACL deletes an isolation ACL this call created for a network whose
// creation then failed, so that nothing is left half-done.
func (m *Manager) dropNewACL(p *netPlan, changes []Change) {
	for _, c := range changes {
		if c.Kind == KindACL && c.Action == Created {
			if err := m.c.DeleteNetworkACL(c.Name); err != nil && !isNotFound(err) {
				m.log.Warn("could not remove the ACL of a network that failed to be created", "acl", c.Name, "err", err)
			}
		}
	}
}

func (m *Manager) correctNetwork(ctx context.Context, p *netPlan, cur *api.Network, etag string) (*Network, []Change, error) {
	var changes []Change
	n := &Network{Name: p.Name, Owner: p.owner}
	n.IPv4, _ = netip.ParsePrefix(cur.Config["ipv4.address"])
	if p.Isolation != IsolationNone {
		ch, err := m.ensureACL(p)
		if err != nil {
			return nil, nil, err
		}
		if ch != nil {
			changes = append(changes, *ch)
		}
		n.ACL = p.acl
	}
	curCfg := cur.Config
	if curCfg == nil {
		curCfg = map[string]string{} // an existing bridge: nil would mean creating
	}
	want := p.ownedConfig(curCfg, netip.Prefix{})
	if p.IPv4.IsValid() && want["ipv4.address"] != cur.Config["ipv4.address"] {
		used, err := m.usedSubnets(p.Name)
		if err != nil {
			return nil, nil, err
		}
		if err := checkFree(p.Name, p.IPv4, used); err != nil {
			return nil, nil, err
		}
	}
	put := cur.Writable()
	cfg := make(map[string]string, len(put.Config))
	for k, v := range put.Config {
		cfg[k] = v
	}
	var keys []string
	for _, k := range sortedKeys(want) {
		v, had := cfg[k]
		switch {
		case want[k] == "" && had:
			delete(cfg, k)
		case want[k] != "" && v != want[k]:
			cfg[k] = want[k]
		default:
			continue
		}
		keys = append(keys, k)
	}
	if put.Description != p.desc {
		put.Description = p.desc
		keys = append(keys, "description")
	}
	if len(keys) > 0 {
		if err := ctx.Err(); err != nil {
			return nil, nil, fmt.Errorf("ensure network %s: %w", p.Name, err)
		}
		put.Config = cfg
		if err := m.updateNetwork(ctx, p.Name, put, etag); err != nil {
			if isPreconditionFailed(err) {
				return nil, changes, err
			}
			return nil, nil, fmt.Errorf("correct network %s (%s): %w", p.Name, strings.Join(keys, ", "), err)
		}
		slices.Sort(keys)
		m.log.Info("network corrected", "network", p.Name, "keys", keys)
		changes = append(changes, Change{Kind: KindNetwork, Name: p.Name, Action: Updated, Keys: keys})
	}
	n.IPv4, _ = netip.ParsePrefix(cfg["ipv4.address"])
	if v := cfg["ipv6.address"]; v != "none" {
		n.IPv6, _ = netip.ParsePrefix(v)
	}
	if p.Isolation == IsolationNone {
		ch, err := m.dropACL(p)
		if err != nil {
			return nil, nil, err
		}
		if ch != nil {
			changes = append(changes, *ch)
		}
	}
	return n, changes, nil
}

// updateNetwork updates a network, retrying a few times on transient server
// errors (see isTransient): an update that touches the bridge's devices
// (security.acls, addresses) meets the same vanishing-veth failure as a
// create or a delete.
func (m *Manager) updateNetwork(ctx context.Context, name string, put api.NetworkPut, etag string) error {
	for attempt := 1; ; attempt++ {
		err := m.c.UpdateNetwork(name, put, etag)
		if err == nil || !again(err, attempt) || isPreconditionFailed(err) {
			return err
		}
		m.log.Warn("updating network failed; retrying", "network", name, "attempt", attempt, "err", err)
		if cerr := pause(ctx, attempt); cerr != nil {
			return errors.Join(err, cerr)
		}
	}
}

// transientTries bounds the attempts at a network create, update or delete
// that fails on a vanished link (isVanishedLink). With pause's steps that is
// about a minute: on a host where containers come and go by the dozen
// (parallel test packages, a loaded worker) five quick tries were seen to
// fail in a row, and 15 s of tries while fifty containers were launched
// and deleted beside them. Other server errors get otherServerErrorTries.
const (
	transientTries        = 60
	otherServerErrorTries = 5
)

// pause waits before attempt+1: 100 ms more per attempt, at most a second;
// it returns ctx's error when ctx ends first.
func pause(ctx context.Context, attempt int) error {
	d := min(time.Duration(attempt)*100*time.Millisecond, time.Second)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// isTransient recognises server errors worth another try: Incus 6.0.4 fails
// to create or delete a bridge when some veth elsewhere on the host vanishes
// while it enumerates interfaces ("... Device "vethX" does not exist"),
// which busy hosts see.
func isTransient(err error) bool {
	return api.StatusErrorCheck(err, 500) || strings.Contains(err.Error(), "does not exist")
}

// isVanishedLink is that failure in particular: no fault of the request,
// so it gets transientTries attempts; other server errors get fewer.
func isVanishedLink(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "link show") && strings.Contains(msg, "does not exist")
}

// again reports whether a network call that failed with err on attempt
// (1-based) is worth another attempt.
func again(err error, attempt int) bool {
	switch {
	case isVanishedLink(err):
		return attempt < transientTries
	case isTransient(err):
		return attempt < otherServerErrorTries
	}
	return false
}
