package incustest

import (
	"testing"

	"github.com/matryer/is"
)

func TestChainsNamedFor(t *testing.T) {
	is := is.New(t)
	listing := `table inet incus {
	chain fwd.ixt01 {
		type filter hook forward priority filter; policy accept;
		ip version 4 oifname "ixt01" accept
	}

	chain in.ixt01 {
		iifname "ixt01" jump acl.ixt01
	}

	chain acl.ixt01 {
	}

	chain in.ixt012 {
	}

	chain ixt01 {
	}

	chain prert.inst.eth0 {
	}
}
`
	is.Equal(chainsNamedFor(listing, "ixt01"), []string{"fwd.ixt01", "in.ixt01", "acl.ixt01"})
	is.Equal(chainsNamedFor(listing, "ixt012"), []string{"in.ixt012"})
	is.Equal(chainsNamedFor(listing, "eth0"), []string(nil)) // "inst.eth0" is not a bridge's name
	is.Equal(chainsNamedFor("", "ixt01"), []string(nil))
}

func TestFirewallChainsNeedsABridge(t *testing.T) {
	is := is.New(t)
	_, err := FirewallChains("")
	is.True(err != nil)
}
