package incustest_test

import (
	"net/netip"
	"testing"
)

type netipAddr = netip.Addr

func mustAddr(t *testing.T, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatalf("parse address %q: %v", s, err)
	}
	return a
}
