package netbridge

import (
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/matryer/is"
)

func TestHostFirewallModes(t *testing.T) {
	gw4 := netip.MustParsePrefix("10.42.0.1/24")
	gw6 := netip.MustParsePrefix("fd42:1:2:3::1/64")
	for _, tc := range []struct {
		name                 string
		spec                 FirewallSpec
		input, forward, miss []string
	}{
		{
			name:  "strict",
			spec:  FirewallSpec{Bridge: "x-br", IPv4: gw4},
			input: []string{`iifname "x-br" udp dport 67 accept`, `iifname "x-br" udp dport 53 accept`, `iifname "x-br" tcp dport 53 accept`},
			miss:  []string{"forward", `iifname "x-br" accept`, "547"},
		},
		{
			name:    "egress dual stack",
			spec:    FirewallSpec{Bridge: "x-br", IPv4: gw4, IPv6: gw6, Egress: true},
			input:   []string{`udp dport 547 accept`, `nd-router-solicit`},
			forward: []string{`iifname "x-br" ip saddr 10.42.0.0/24 accept`, `iifname "x-br" ip6 saddr fd42:1:2:3::/64 accept`, `oifname "x-br" ct state established,related accept`},
		},
		{
			name:    "trusted, intra-bridge",
			spec:    FirewallSpec{Bridge: "x-br", Trusted: true, IntraBridge: true},
			input:   []string{`iifname "x-br" accept`},
			forward: []string{`iifname "x-br" oifname "x-br" accept`},
			miss:    []string{"dport 67"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			r, err := HostFirewall(tc.spec)
			is.NoErr(err)
			in, fwd := strings.Join(r.Input, "\n"), strings.Join(r.Forward, "\n")
			for _, w := range tc.input {
				is.True(strings.Contains(in, w)) // input rule present
			}
			for _, w := range tc.forward {
				is.True(strings.Contains(fwd, w)) // forward rule present
			}
			script := r.Script("inet", "filter", "input", "forward")
			for _, w := range tc.miss {
				is.True(!strings.Contains(script, w)) // rule absent
			}
			is.Equal(len(r.TrustedInterfaces) == 1, tc.spec.Trusted)
			nftCheck(t, r)
		})
	}
}

func TestHostFirewallRejectsBadInput(t *testing.T) {
	is := is.New(t)
	for _, spec := range []FirewallSpec{
		{},
		{Bridge: `x" accept; #`},
		{Bridge: "x-br", IPv4: netip.MustParsePrefix("fd00::1/64")},
		{Bridge: "x-br", IPv6: netip.MustParsePrefix("10.0.0.1/24")},
	} {
		_, err := HostFirewall(spec)
		is.True(errors.Is(err, ErrInvalid))
	}
}

// nftCheck has nft parse the rules inside a scratch table without
// committing anything (nft --check), where nft and root are available.
func nftCheck(t *testing.T, r *FirewallRules) {
	t.Helper()
	nft, err := exec.LookPath("nft")
	if err != nil || os.Geteuid() != 0 {
		t.Log("nft or root unavailable: rules not checked by nft")
		return
	}
	script := "add table inet incusexec_check\n" +
		"add chain inet incusexec_check input { type filter hook input priority 0; policy drop; }\n" +
		"add chain inet incusexec_check forward { type filter hook forward priority 0; policy drop; }\n" +
		r.Script("inet", "incusexec_check", "input", "forward")
	cmd := exec.Command(nft, "--check", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft --check rejected the rules: %v\n%s\n%s", err, out, script)
	}
}
