package incustest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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

// TestSweepOrphanChains plants chains of two test bridges that do not
// exist, one of them known to a live daemon directory (as a bridge being
// deleted is): only the unknown one's go.
func TestSweepOrphanChains(t *testing.T) {
	is := is.New(t)
	if _, err := exec.LookPath("nft"); err != nil || os.Geteuid() != 0 {
		t.Skip("needs nft and root")
	}
	gone, known := UniqueName("ixt"), UniqueName("ixt")
	dir, err := os.MkdirTemp("", fmt.Sprintf("incustest-%d-", os.Getpid()))
	is.NoErr(err)
	defer os.RemoveAll(dir)
	is.NoErr(os.MkdirAll(filepath.Join(dir, "networks", known), 0o755))
	script := "add table inet incus\n"
	for _, b := range []string{gone, known} {
		script += fmt.Sprintf("add chain inet incus in.%s\nadd chain inet incus fwd.%s\n", b, b)
	}
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("planting the chains: %v: %s", err, out)
	}
	defer func() { _ = ClearFirewall(known) }()

	is.NoErr(sweepOrphanChains())
	chains, err := FirewallChains(gone)
	is.NoErr(err)
	is.Equal(chains, []string(nil)) // the orphan's chains are gone
	chains, err = FirewallChains(known)
	is.NoErr(err)
	is.Equal(chains, []string{"inet incus in." + known, "inet incus fwd." + known}) // a known bridge's stay
}
