package incustest

import (
	"context"
	"crypto/rand"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// reserveBridge picks a bridge name and an IPv4 /24 that no interface, route
// or other test daemon on this host uses. The choice is serialised across
// processes by a lock file, which release drops once the bridge exists (from
// then on the host's addresses show it taken).
func reserveBridge(ctx context.Context) (name string, gateway netip.Prefix, release func(), err error) {
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "incustest-subnets.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", netip.Prefix{}, nil, err
	}
	for {
		err = syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			lock.Close()
			return "", netip.Prefix{}, nil, fmt.Errorf("incustest: waiting for the subnet lock: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	release = func() { lock.Close() }
	used, err := hostPrefixes()
	if err != nil {
		release()
		return "", netip.Prefix{}, nil, err
	}
	for range 200 {
		// 10.100.0.0 - 10.227.255.0: away from the usual 10.0.x and 10.255.x.
		a, _ := rand.Int(rand.Reader, big.NewInt(128))
		b, _ := rand.Int(rand.Reader, big.NewInt(256))
		cand := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(100 + a.Int64()), byte(b.Int64()), 1}), 24)
		if !overlapsAny(cand, used) {
			return UniqueName("ixt"), cand, release, nil
		}
	}
	release()
	return "", netip.Prefix{}, nil, fmt.Errorf("incustest: no free 10.x.y.0/24 subnet found")
}

// hostPrefixes lists the IPv4 prefixes of every address on the host.
func hostPrefixes() ([]netip.Prefix, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if p, err := netip.ParsePrefix(ipn.String()); err == nil && p.Addr().Is4() {
				out = append(out, p.Masked())
			}
		}
	}
	routes, _ := os.ReadFile("/proc/net/route")
	out = append(out, parseRoutes(string(routes))...)
	return out, nil
}

func overlapsAny(p netip.Prefix, used []netip.Prefix) bool {
	for _, u := range used {
		if u.Bits() > 0 && u.Overlaps(p) {
			return true
		}
	}
	return false
}
