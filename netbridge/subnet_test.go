package netbridge

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/matryer/is"
)

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func TestPickSubnetIsStableAndAvoidsUsed(t *testing.T) {
	is := is.New(t)
	within := netip.MustParsePrefix("10.0.0.0/8")
	a, err := PickSubnet("ism-br", within, 24, nil)
	is.NoErr(err)
	b, err := PickSubnet("ism-br", within, 24, nil)
	is.NoErr(err)
	is.Equal(a, b) // same seed, same pick: concurrent processes agree
	is.Equal(a.Bits(), 24)
	is.True(within.Contains(a.Addr()))
	is.Equal(a.Addr(), a.Masked().Addr().Next()) // the gateway is the first host

	c, err := PickSubnet("other-br", within, 24, nil)
	is.NoErr(err)
	is.True(c != a) // different bridges spread out

	// With a's subnet (as a wider route) taken, the next free one is picked.
	used := prefixes(netip.PrefixFrom(a.Addr(), 23).Masked().String())
	d, err := PickSubnet("ism-br", within, 24, used)
	is.NoErr(err)
	is.True(!d.Overlaps(used[0]))
	is.True(within.Contains(d.Addr()))
}

func TestPickSubnetWrapsAndRunsOut(t *testing.T) {
	is := is.New(t)
	within := netip.MustParsePrefix("192.168.4.0/22") // four /24s
	used := prefixes("192.168.4.0/24", "192.168.5.0/24", "192.168.7.0/24")
	got, err := PickSubnet("any", within, 24, used)
	is.NoErr(err)
	is.Equal(got, netip.MustParsePrefix("192.168.6.1/24")) // the only free one, whatever the start

	_, err = PickSubnet("any", within, 24, append(used, netip.MustParsePrefix("192.168.6.128/25")))
	is.True(errors.Is(err, ErrNoFreeSubnet))

	// The default route never counts as used.
	got, err = PickSubnet("any", within, 24, prefixes("0.0.0.0/0", "192.168.4.0/23", "192.168.7.0/24"))
	is.NoErr(err)
	is.Equal(got, netip.MustParsePrefix("192.168.6.1/24"))

	for _, bad := range []struct {
		within string
		bits   int
	}{{"10.0.0.0/8", 7}, {"10.0.0.0/8", 31}, {"fd00::/8", 64}} {
		_, err := PickSubnet("x", netip.MustParsePrefix(bad.within), bad.bits, nil)
		is.True(errors.Is(err, ErrInvalid))
	}
}

func TestParseRouteTable(t *testing.T) {
	is := is.New(t)
	table := "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" +
		"eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n" + // default via 192.168.2.1
		"eth0\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n" + // 192.168.2.0/24
		"wg0\t0000100A\t00000000\t0001\t0\t0\t0\t0000F0FF\t0\t0\t0\n" + // 10.16.0.0/12
		"bad\tzz\n"
	got := parseRouteTable(table)
	is.Equal(len(got), 2)
	is.Equal(got[0].Prefix, netip.MustParsePrefix("192.168.2.0/24"))
	is.Equal(got[0].Interface, "eth0")
	is.Equal(got[0].What, "route 192.168.2.0/24 via eth0")
	is.Equal(got[1].Prefix, netip.MustParsePrefix("10.16.0.0/12"))
}

func TestLocalUsedSubnetsSeesLoopback(t *testing.T) {
	is := is.New(t)
	used, err := LocalUsedSubnets()
	is.NoErr(err)
	found := false
	for _, u := range used {
		if u.Addr == netip.MustParseAddr("127.0.0.1") {
			found = true
			is.Equal(u.Prefix, netip.MustParsePrefix("127.0.0.0/8"))
		}
	}
	is.True(found)
}

func TestCheckFreeNamesTheCulprit(t *testing.T) {
	is := is.New(t)
	used := []UsedSubnet{{Prefix: netip.MustParsePrefix("10.5.0.0/16"), What: "route 10.5.0.0/16 via wg0"}}
	err := checkFree("x-br", netip.MustParsePrefix("10.5.3.1/24"), used)
	is.True(errors.Is(err, ErrSubnetInUse))
	is.Equal(err.Error(), "netbridge: subnet in use: network x-br: subnet 10.5.3.0/24 overlaps 10.5.0.0/16 (route 10.5.0.0/16 via wg0)")
	is.NoErr(checkFree("x-br", netip.MustParsePrefix("10.6.3.1/24"), used))
}

func FuzzPickSubnet(f *testing.F) {
	f.Add("seed", "10.0.0.0/8", 24, "10.1.0.0/16")
	f.Add("", "192.168.0.0/16", 30, "0.0.0.0/0")
	f.Add("x", "172.16.0.0/12", 12, "172.16.0.0/12")
	f.Fuzz(func(t *testing.T, seed, within string, bits int, usedS string) {
		w, err := netip.ParsePrefix(within)
		if err != nil || bits > 32 || bits < 0 || (w.IsValid() && bits-w.Bits() > 16) {
			return // keep the search space small
		}
		u, _ := netip.ParsePrefix(usedS)
		got, err := PickSubnet(seed, w, bits, []netip.Prefix{u})
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrNoFreeSubnet) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if !w.Masked().Contains(got.Addr()) || got.Bits() != bits {
			t.Fatalf("picked %s outside %s or not /%d", got, w, bits)
		}
		if u.IsValid() && u.Bits() > 0 && got.Masked().Overlaps(u) {
			t.Fatalf("picked %s overlapping used %s", got, u)
		}
	})
}
