package incustest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// incusd's nftables firewall keeps each managed bridge's rules in chains of
// its own, named <purpose>.<bridge> ("in", "out", "fwd", "acl", ...), in the
// host's table inet incus. incusd removes them when the network is stopped or
// deleted through it; a daemon killed with its network up, or a network whose
// creation was cut short, leaves them in the host's ruleset for good. Each
// such network adds base chains that every packet of the host passes through
// and that every later nft command of every daemon parses (seen: 87 networks'
// chains left by killed test runs made each `nft -j list ruleset` cost 0.1
// CPU-second instead of 0.01).

// FirewallChains lists the nftables chains of the host that incusd made for
// bridge, as "<family> incus <chain>", from whichever of its tables exist
// (inet now; ip and ip6 held rules of older releases, netdev holds limits).
// It is empty when nft is not installed.
func FirewallChains(bridge string) ([]string, error) {
	if bridge == "" {
		return nil, errors.New("incustest: firewall chains: no bridge name")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		return nil, nil
	}
	tables, err := nft("list", "tables")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(tables, "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "table" || f[2] != "incus" {
			continue
		}
		listing, err := nft("list", "table", f[1], f[2])
		if err != nil {
			return nil, err
		}
		for _, c := range chainsNamedFor(listing, bridge) {
			out = append(out, f[1]+" incus "+c)
		}
	}
	return out, nil
}

func nft(args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("nft", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("incustest: nft %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// chainsNamedFor picks from a listing of one table the chains named
// <purpose>.<bridge>.
func chainsNamedFor(listing, bridge string) []string {
	var out []string
	for _, c := range bridgeChains(listing) {
		if c.bridge == bridge {
			out = append(out, c.name)
		}
	}
	return out
}

type bridgeChain struct{ name, bridge string }

// bridgeChains lists the chains of a listing of one table that are named
// <purpose>.<something>, with that something: a bridge's name for a
// network's chains.
func bridgeChains(listing string) []bridgeChain {
	var out []bridgeChain
	s := bufio.NewScanner(strings.NewReader(listing))
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) < 2 || f[0] != "chain" {
			continue
		}
		if purpose, bridge, ok := strings.Cut(f[1], "."); ok && purpose != "" {
			out = append(out, bridgeChain{name: f[1], bridge: bridge})
		}
	}
	return out
}

// ClearFirewall deletes the chains incusd made for bridge (see
// FirewallChains), in one nft transaction: each is flushed first, so that the
// jumps between them do not hold any back.
func ClearFirewall(bridge string) error {
	chains, err := FirewallChains(bridge)
	if err != nil || len(chains) == 0 {
		return err
	}
	var script strings.Builder
	for _, c := range chains {
		fmt.Fprintf(&script, "flush chain %s\n", c)
	}
	for _, c := range chains {
		fmt.Fprintf(&script, "delete chain %s\n", c)
	}
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("incustest: deleting the nftables chains of bridge %s: %v: %s", bridge, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// sweepOrphanChains clears the firewall chains of test bridges (named by
// reserveBridge, "ixt...") that no longer exist and that no live test daemon
// knows: what a run of this package before Stop cleared them left on the
// host. A bridge being deleted right now keeps its directory under its
// daemon's networks/ until incusd has cleared its chains, so such a bridge is
// left to incusd.
func sweepOrphanChains() error {
	if _, err := exec.LookPath("nft"); err != nil {
		return nil
	}
	listing, err := nft("list", "table", "inet", "incus")
	if err != nil {
		if strings.Contains(err.Error(), "No such file or directory") {
			return nil
		}
		return err
	}
	known := map[string]bool{}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "incustest-*-*", "networks", "*"))
	for _, d := range dirs {
		known[filepath.Base(d)] = true
	}
	seen := map[string]bool{}
	var errs []error
	for _, c := range bridgeChains(listing) {
		bridge := c.bridge
		if !strings.HasPrefix(bridge, "ixt") || seen[bridge] || known[bridge] {
			continue
		}
		seen[bridge] = true
		if _, err := net.InterfaceByName(bridge); err == nil {
			continue
		}
		errs = append(errs, ClearFirewall(bridge))
	}
	return errors.Join(errs...)
}
