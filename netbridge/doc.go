// Package netbridge makes sure that the managed bridge a host's instances
// share, and the profiles that wire instances to it, exist and stay as the
// host specified; and removes them when their owner is done.
//
// A Manager works through any client with the few methods of [Client]
// (incus.InstanceServer has them all):
//
//   - [Manager.Ensure] creates a bridge named after the host's prefix
//     ([BridgeName]: prefix + "-br", within the kernel's 15-byte interface
//     limit) with an IPv4 subnet given or picked to collide with no host
//     address or route and no other Incus network ([PickSubnet]), IPv6 on or
//     off, NAT on or off, DHCP ranges, MTU, description and the owner label
//     user.incusexec.owner ([executor.OwnerKey]). Called again it corrects the keys
//     it owns that drifted, leaves every other key alone, and reports each
//     [Change] it made: none when all was in order. Many goroutines and
//     processes may call it at once: whoever loses the race to create reads
//     the winner's object and goes on from there. On a cluster the bridge is
//     defined on every member, then instantiated.
//   - [Manager.EnsureProfile] does the same for a profile: the Debusine one
//     ([DebusineProfile]) has raw.lxc lxc.mount.auto=sys, the NIC eth0
//     named host0 on the bridge, the root disk on a pool and
//     security.secureboot=false for VMs; limits and security.* keys are a
//     field away. A missing pool or network is an error before anything is
//     created.
//   - [Manager.Cleanup] removes an owner's profiles, networks and ACLs when
//     no instance and no object of someone else uses them, and otherwise
//     removes nothing and names the users ([ErrInUse]).
//
// Bad input (an invalid name, a prefix too long for the interface limit, a
// subnet that overlaps one in use, a pool that does not exist) is an error
// wrapping a sentinel of this package, naming the thing at fault, before
// anything is created.
//
// # Isolation
//
// Hosts that run untrusted code set [NetworkSpec.Isolation]:
// [IsolationStrict] applies a network ACL under which instances reach DHCP
// and DNS on the bridge and nothing else on the host, the LAN or beyond, and
// nothing outside reaches them; [IsolationEgress] also lets them open
// connections to public addresses, for tasks that fetch packages, while the
// host and private ranges stay closed. ACLs on a bridge need Incus's
// nftables firewall driver, and they do not filter traffic between instances
// on the same bridge (an Incus limitation): give mutually distrusting
// tenants bridges of their own.
//
// # Host firewall
//
// Incus adds its own nftables rules for its bridges, but a host whose
// firewall drops by default (NixOS with networking.nftables, say) drops the
// instances' DHCP and DNS requests in its own chains before Incus's accept
// counts. [HostFirewall] renders the rules such a host must add to its input
// and forward chains (NixOS: networking.firewall.extraInputRules and
// extraForwardRules) for a bridge and its instances.
//
// Warning: every rule rendered opens the host's firewall. The strict set
// only admits DHCP, DNS and ICMP errors from the bridge; Egress makes the
// host a router for the instances; Trusted (NixOS's trustedInterfaces)
// admits everything from the instances to every service on the host, which
// hands code running in an instance the host's whole attack surface. Render
// the least a host needs, and never trust a bridge that carries untrusted
// code.
package netbridge
