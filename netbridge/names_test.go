package netbridge

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/incusexec/incusexec/executor"
	"github.com/matryer/is"
)

func TestBridgeName(t *testing.T) {
	for _, tc := range []struct {
		prefix, want string
		ok           bool
	}{
		{"ism", "ism-br", true},
		{"debusine", "debusine-br", true},
		{"a", "a-br", true},
		{"abcdefghijkl", "abcdefghijkl-br", true}, // 12 bytes: the name is exactly 15
		{"abcdefghijklm", "", false},              // 13 bytes: 16, too long
		{"", "", false},
		{"1abc", "", false},
		{"-abc", "", false},
		{"abc-", "", false},
		{"ab_c", "", false},
		{"ab.c", "", false},
		{"ab c", "", false},
		{"äbc", "", false},
		{"a-b-c", "a-b-c-br", true},
	} {
		t.Run(tc.prefix, func(t *testing.T) {
			is := is.New(t)
			got, err := BridgeName(tc.prefix)
			if !tc.ok {
				is.True(errors.Is(err, ErrInvalid))
				is.True(strings.Contains(err.Error(), "prefix")) // names the culprit
				return
			}
			is.NoErr(err)
			is.Equal(got, tc.want)
			is.True(len(got) <= MaxNameLen)
			is.NoErr(ValidateNetworkName(got))
		})
	}
}

func TestTooLongPrefixErrorExplainsLimit(t *testing.T) {
	is := is.New(t)
	_, err := BridgeName("averyveryverylongprefix")
	is.True(errors.Is(err, ErrInvalid))
	is.True(strings.Contains(err.Error(), "15-byte interface limit"))
}

func TestPlanDefaultsAndValidation(t *testing.T) {
	is := is.New(t)
	p, err := NetworkSpec{Prefix: "ism"}.plan()
	is.NoErr(err)
	is.Equal(p.Name, "ism-br")
	is.Equal(p.owner, "ism")
	is.Equal(p.acl, "ism-br-isolation")
	is.Equal(p.AutoRange, DefaultAutoRange)
	is.Equal(p.AutoBits, DefaultAutoBits)

	gw := netip.MustParsePrefix("10.9.8.1/24")
	for name, spec := range map[string]NetworkSpec{
		"no prefix or name":       {},
		"bad name":                {Name: "x/y", Owner: "o"},
		"no owner":                {Name: "xbr"},
		"owner with newline":      {Name: "xbr", Owner: "a\nb"},
		"IPv6 in IPv4":            {Prefix: "x", IPv4: netip.MustParsePrefix("fd00::1/64")},
		"network address as gw":   {Prefix: "x", IPv4: netip.MustParsePrefix("10.9.8.0/24")},
		"broadcast address as gw": {Prefix: "x", IPv4: netip.MustParsePrefix("10.9.8.255/24")},
		"/31":                     {Prefix: "x", IPv4: netip.MustParsePrefix("10.9.8.1/31")},
		"ranges without subnet":   {Prefix: "x", DHCPRanges: []DHCPRange{{netip.MustParseAddr("10.9.8.10"), netip.MustParseAddr("10.9.8.20")}}},
		"range outside":           {Prefix: "x", IPv4: gw, DHCPRanges: []DHCPRange{{netip.MustParseAddr("10.9.8.10"), netip.MustParseAddr("10.9.9.20")}}},
		"range reversed":          {Prefix: "x", IPv4: gw, DHCPRanges: []DHCPRange{{netip.MustParseAddr("10.9.8.20"), netip.MustParseAddr("10.9.8.10")}}},
		"MTU too small":           {Prefix: "x", MTU: 100},
		"IPv6 address while off":  {Prefix: "x", IPv6Address: netip.MustParsePrefix("fd00::1/64")},
		"auto bits too long":      {Prefix: "x", AutoBits: 31},
		"auto range IPv6":         {Prefix: "x", AutoRange: netip.MustParsePrefix("fd00::/8")},
		"unknown isolation":       {Prefix: "x", Isolation: 7},
	} {
		_, err := spec.plan()
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", name, err)
		}
	}
}

func TestOwnedConfig(t *testing.T) {
	is := is.New(t)
	gw := netip.MustParsePrefix("10.9.8.1/24")
	p, err := NetworkSpec{Prefix: "x", IPv4: gw, MTU: 1400, Isolation: IsolationStrict,
		DHCPRanges: []DHCPRange{{netip.MustParseAddr("10.9.8.10"), netip.MustParseAddr("10.9.8.20")}}}.plan()
	is.NoErr(err)
	want := p.ownedConfig(nil, gw)
	is.Equal(want, map[string]string{
		executor.OwnerKey: "x", "ipv4.address": "10.9.8.1/24", "ipv4.nat": "false", "ipv6.address": "none",
		"bridge.mtu": "1400", "ipv4.dhcp.ranges": "10.9.8.10-10.9.8.20", "security.acls": "x-br-isolation",
	})
	// Other ACLs on the list are kept, ours is added once.
	want = p.ownedConfig(map[string]string{"security.acls": "theirs"}, gw)
	is.Equal(want["security.acls"], "theirs,x-br-isolation")
	want = p.ownedConfig(map[string]string{"security.acls": "theirs,x-br-isolation"}, gw)
	_, owned := want["security.acls"]
	is.True(!owned) // already right
	// Isolation off removes only ours.
	p.Isolation = IsolationNone
	want = p.ownedConfig(map[string]string{"security.acls": "x-br-isolation,theirs"}, gw)
	is.Equal(want["security.acls"], "theirs")
	want = p.ownedConfig(map[string]string{"security.acls": "x-br-isolation"}, gw)
	is.Equal(want["security.acls"], "") // key to be removed

	// Automatic subnet: an existing bridge keeps its address.
	p, err = NetworkSpec{Prefix: "x", IPv6: true, NAT: true}.plan()
	is.NoErr(err)
	want = p.ownedConfig(map[string]string{"ipv4.address": "10.1.1.1/24", "ipv6.address": "fd12::1/64"}, gw)
	_, owned = want["ipv4.address"]
	is.True(!owned)
	_, owned = want["ipv6.address"]
	is.True(!owned)
	is.Equal(want["ipv6.nat"], "true")
	is.Equal(want["ipv4.nat"], "true")
	// ... and gets a derived ULA when IPv6 is turned on.
	want = p.ownedConfig(map[string]string{"ipv6.address": "none"}, gw)
	ula := netip.MustParsePrefix(want["ipv6.address"])
	is.True(netip.MustParsePrefix("fd00::/8").Contains(ula.Addr()))
	is.Equal(ula.Bits(), 64)
	is.Equal(ula, ula6("x-br")) // stable
	is.True(ula6("x-br") != ula6("y-br"))
}

func FuzzNames(f *testing.F) {
	for _, s := range []string{"ism", "debusine", "a-b", "", "-", "abcdefghijklm", "x_y", "ä", "a\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		name, err := BridgeName(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("BridgeName(%q): error %v does not wrap ErrInvalid", s, err)
			}
			return
		}
		// Whatever is accepted makes a valid interface, network and ACL name.
		if len(name) > MaxNameLen || len(name) < 2 {
			t.Fatalf("BridgeName(%q) = %q: bad length", s, name)
		}
		if err := ValidateNetworkName(name); err != nil {
			t.Fatalf("BridgeName(%q) = %q, rejected by ValidateNetworkName: %v", s, name, err)
		}
		acl := ACLName(name)
		if len(acl) > 63 || strings.HasPrefix(acl, "-") || strings.HasSuffix(acl, "-") {
			t.Fatalf("ACL name %q is not a valid Incus ACL name", acl)
		}
		for _, c := range []byte(acl) {
			if !isLetter(c) && !isDigit(c) && c != '-' {
				t.Fatalf("ACL name %q has byte %q", acl, c)
			}
		}
	})
}

func FuzzNetworkSpec(f *testing.F) {
	f.Add("ism", "10.1.2.1/24", "10.1.2.10", "10.1.2.20", 1500)
	f.Add("x", "10.1.2.0/24", "", "", 0)
	f.Add("y", "fd00::1/64", "::1", "::2", 9000)
	f.Add("z", "", "10.0.0.1", "10.0.0.2", -1)
	f.Fuzz(func(t *testing.T, name, subnet, first, last string, mtu int) {
		spec := NetworkSpec{Name: name, Owner: "o", MTU: mtu}
		spec.IPv4, _ = netip.ParsePrefix(subnet)
		a, errA := netip.ParseAddr(first)
		b, errB := netip.ParseAddr(last)
		if errA == nil && errB == nil {
			spec.DHCPRanges = []DHCPRange{{a, b}}
		}
		p, err := spec.plan()
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("plan: error %v does not wrap ErrInvalid", err)
			}
			return
		}
		// Accepted specs render a config whose addresses parse back and
		// whose ranges lie in the subnet.
		cfg := p.ownedConfig(nil, spec.IPv4)
		if spec.IPv4.IsValid() {
			gw, err := netip.ParsePrefix(cfg["ipv4.address"])
			if err != nil || gw != spec.IPv4 || !gw.Addr().Is4() {
				t.Fatalf("ipv4.address %q for %s", cfg["ipv4.address"], spec.IPv4)
			}
		}
		for _, r := range spec.DHCPRanges {
			if !spec.IPv4.Contains(r.First) || !spec.IPv4.Contains(r.Last) {
				t.Fatalf("range %s outside %s accepted", r, spec.IPv4)
			}
		}
	})
}
