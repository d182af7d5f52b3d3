package netbridge

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"math/bits"
	"net"
	"net/netip"
	"os"
	"strings"
)

// UsedSubnet is an IPv4 subnet taken on the host or by an Incus network.
type UsedSubnet struct {
	Prefix netip.Prefix // masked
	// Addr is the host's own address when the entry is an interface
	// address (zero for routes and Incus networks).
	Addr netip.Addr
	// What names the user for error messages: "address on eth0",
	// "route via eth0", "Incus network incusbr0".
	What string
	// Interface is the host interface the subnet is on ("" for Incus
	// networks); a bridge's own addresses and routes do not conflict with
	// it.
	Interface string
}

// DefaultAutoRange is where automatic subnets are picked from.
var DefaultAutoRange = netip.MustParsePrefix("10.0.0.0/8")

// DefaultAutoBits is the prefix length of automatic subnets.
const DefaultAutoBits = 24

// PickSubnet picks the first subnet of length bits inside within that
// overlaps none of used, starting at a position derived from seed (the
// bridge name), so that processes ensuring the same bridge pick the same
// subnet and different bridges spread out. It returns the gateway: the
// subnet's first host address with the prefix length, as ipv4.address wants.
func PickSubnet(seed string, within netip.Prefix, bits int, used []netip.Prefix) (netip.Prefix, error) {
	if !within.IsValid() || !within.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("%w: automatic subnet range %s is not an IPv4 prefix", ErrInvalid, within)
	}
	within = within.Masked()
	if bits < within.Bits() || bits > 30 {
		return netip.Prefix{}, fmt.Errorf("%w: automatic subnet length /%d does not fit in %s (want /%d to /30)",
			ErrInvalid, bits, within, within.Bits())
	}
	count := uint64(1) << (bits - within.Bits())
	h := fnv.New64a()
	h.Write([]byte(seed))
	start := h.Sum64() % count
	base := binary.BigEndian.Uint32(within.Addr().AsSlice())
	step := uint32(1) << (32 - bits)
	for i := range count {
		n := base + uint32((start+i)%count)*step
		cand := netip.PrefixFrom(addr4(n), bits)
		if !overlapsAny(cand, used) {
			return netip.PrefixFrom(addr4(n+1), bits), nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("%w: every /%d in %s overlaps a used subnet", ErrNoFreeSubnet, bits, within)
}

func addr4(n uint32) netip.Addr {
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], n)
	return netip.AddrFrom4(a)
}

func overlapsAny(p netip.Prefix, used []netip.Prefix) bool {
	for _, u := range used {
		if u.IsValid() && u.Bits() > 0 && u.Overlaps(p) {
			return true
		}
	}
	return false
}

// LocalUsedSubnets lists the IPv4 subnets of this machine's interface
// addresses and routes (the default route excepted).
func LocalUsedSubnets() ([]UsedSubnet, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("netbridge: list host interfaces: %w", err)
	}
	var out []UsedSubnet
	for _, ifc := range ifaces {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue // the interface vanished meanwhile
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			p, err := netip.ParsePrefix(ipn.String())
			if err != nil || !p.Addr().Is4() {
				continue
			}
			out = append(out, UsedSubnet{Prefix: p.Masked(), Addr: p.Addr(), What: "address " + p.String() + " on " + ifc.Name, Interface: ifc.Name})
		}
	}
	if table, err := os.ReadFile("/proc/net/route"); err == nil {
		out = append(out, parseRouteTable(string(table))...)
	}
	return out, nil
}

// parseRouteTable reads /proc/net/route: a header line, then per route the
// interface, destination, gateway, flags, refcnt, use, metric and mask, with
// addresses as little-endian hex. The default route is left out.
func parseRouteTable(table string) []UsedSubnet {
	var out []UsedSubnet
	for i, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) < 8 {
			continue
		}
		dst, err1 := hex.DecodeString(f[1])
		mask, err2 := hex.DecodeString(f[7])
		if err1 != nil || err2 != nil || len(dst) != 4 || len(mask) != 4 {
			continue
		}
		m := binary.LittleEndian.Uint32(mask)
		ones := bits.OnesCount32(m)
		if ones == 0 || bits.LeadingZeros32(^m) != ones {
			continue // default route, or not a contiguous mask
		}
		p := netip.PrefixFrom(addr4(binary.LittleEndian.Uint32(dst)), ones).Masked()
		out = append(out, UsedSubnet{Prefix: p, What: "route " + p.String() + " via " + f[0], Interface: f[0]})
	}
	return out
}
