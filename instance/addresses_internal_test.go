package instance

import (
	"net/netip"
	"testing"

	"github.com/lxc/incus/v6/shared/api"
	"github.com/matryer/is"
)

func TestGlobalAddressesPicksAndOrders(t *testing.T) {
	is := is.New(t)
	addr := func(family, address, netmask, scope string) api.InstanceStateNetworkAddress {
		return api.InstanceStateNetworkAddress{Family: family, Address: address, Netmask: netmask, Scope: scope}
	}
	got, err := globalAddresses("c1", map[string]api.InstanceStateNetwork{
		"lo": {Addresses: []api.InstanceStateNetworkAddress{
			addr("inet", "127.0.0.1", "8", "local"), addr("inet6", "::1", "128", "local"),
		}},
		"eth1": {Addresses: []api.InstanceStateNetworkAddress{
			addr("inet6", "fd42::2", "64", "global"), addr("inet", "192.168.1.9", "", "global"),
		}},
		"eth0": {Addresses: []api.InstanceStateNetworkAddress{
			addr("inet6", "fe80::1", "64", "link"),
			addr("inet6", "fd42::5", "64", "global"),
			addr("inet6", "fd42::6", "64", "global"),
			addr("inet", "10.0.3.7", "24", "global"),
		}},
		"eth2": {},
	})
	is.NoErr(err)
	is.Equal(got, []Address{
		{NIC: "eth0", Addr: netip.MustParseAddr("10.0.3.7"), Bits: 24},
		{NIC: "eth0", Addr: netip.MustParseAddr("fd42::5"), Bits: 64},
		{NIC: "eth0", Addr: netip.MustParseAddr("fd42::6"), Bits: 64},
		{NIC: "eth1", Addr: netip.MustParseAddr("192.168.1.9"), Bits: 32}, // no netmask: the host alone
		{NIC: "eth1", Addr: netip.MustParseAddr("fd42::2"), Bits: 64},
	})
	is.Equal(got[0].Prefix().String(), "10.0.3.7/24")

	none, err := globalAddresses("c1", nil)
	is.NoErr(err)
	is.Equal(len(none), 0)

	for _, bad := range []api.InstanceStateNetworkAddress{
		addr("inet", "10.0.3", "24", "global"),
		addr("inet", "10.0.3.7", "33", "global"),
		addr("inet", "10.0.3.7", "255.255.255.0", "global"),
	} {
		_, err := globalAddresses("c1", map[string]api.InstanceStateNetwork{"eth0": {Addresses: []api.InstanceStateNetworkAddress{bad}}})
		is.True(err != nil) // a malformed address or prefix length is reported
	}
}
