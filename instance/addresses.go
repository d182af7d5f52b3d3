package instance

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	"github.com/incusexec/incusexec/internal/incusop"
	"github.com/lxc/incus/v6/shared/api"
)

// Address is a global address of one of an instance's network interfaces,
// through which the host (on the instance's bridge) or others reach it.
type Address struct {
	// NIC is the interface's name inside the instance ("eth0").
	NIC string
	// Addr is the address; Addr.Is4 tells IPv4 from IPv6.
	Addr netip.Addr
	// Bits is the length of the network prefix (24 for a /24).
	Bits int
}

// Prefix returns the address with its prefix length, as "ip addr" shows it
// (10.0.3.7/24).
func (a Address) Prefix() netip.Prefix { return netip.PrefixFrom(a.Addr, a.Bits) }

// Addresses returns the instance's global IPv4 and IPv6 addresses, as its
// state reports them: ordered by interface name, IPv4 before IPv6 on each.
// Loopback and link-local addresses are left out. A running instance whose
// network is not configured yet has none (Ready's NIC and Family wait for
// one); a stopped instance makes an error wrapping ErrNotRunning.
func (in *Instance) Addresses(ctx context.Context) ([]Address, error) {
	st, _, err := incusop.Bind(ctx, in.m.c).GetInstanceState(in.name)
	if err != nil {
		return nil, wrapErr(err, in.name, "get state")
	}
	if st.StatusCode == api.Stopped || st.StatusCode == api.Error {
		return nil, fmt.Errorf("instance %s: addresses: %w (status %s)", in.name, ErrNotRunning, st.Status)
	}
	return globalAddresses(in.name, st.Network)
}

// globalAddresses picks the global inet and inet6 addresses out of an
// instance state's interfaces.
func globalAddresses(name string, nics map[string]api.InstanceStateNetwork) ([]Address, error) {
	addrs := []Address{}
	for nic, n := range nics {
		for _, a := range n.Addresses {
			if a.Scope != "global" || (a.Family != "inet" && a.Family != "inet6") {
				continue
			}
			addr, err := netip.ParseAddr(a.Address)
			if err != nil {
				return nil, fmt.Errorf("instance %s: interface %s: %w", name, nic, err)
			}
			bits := addr.BitLen()
			if a.Netmask != "" {
				// Incus reports the prefix length ("24"), not a mask.
				n, err := strconv.Atoi(a.Netmask)
				if err != nil || n < 0 || n > addr.BitLen() {
					return nil, fmt.Errorf("instance %s: interface %s: netmask %q of %s is no prefix length", name, nic, a.Netmask, addr)
				}
				bits = n
			}
			addrs = append(addrs, Address{NIC: nic, Addr: addr, Bits: bits})
		}
	}
	slices.SortStableFunc(addrs, func(a, b Address) int {
		return cmp.Or(cmp.Compare(a.NIC, b.NIC), cmp.Compare(family(a.Addr), family(b.Addr)))
	})
	return addrs, nil
}

// family orders IPv4 before IPv6.
func family(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 6
}
