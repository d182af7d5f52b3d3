package incustest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestWaitNetworksReportsANetworkOutOfService restarts incusd with its
// bridge unable to start (RestartWithBridgeDown) and checks that
// WaitNetworks sees it, with incusd's reason, and does not return before its
// context ends. A healthy daemon's networks are in service.
func TestWaitNetworksReportsANetworkOutOfService(t *testing.T) {
	d := Private(t, Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if err := d.WaitNetworks(ctx, t.Logf); err != nil {
		t.Fatalf("fresh daemon: %v", err)
	}
	release, err := d.RestartWithBridgeDown(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	var told []string
	short, cancelShort := context.WithTimeout(ctx, 3*time.Second)
	defer cancelShort()
	err = d.WaitNetworks(short, func(f string, a ...any) { told = append(told, f) })
	// incusd's reason: dnsmasq's bind refused, or (on a busy host, as
	// seen while another test run was going on) a link vanishing while it
	// set the bridge up; it says "Failed starting: ..." for either.
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "Failed starting: ") {
		t.Fatalf("WaitNetworks with the bridge's DNS address taken: %v", err)
	}
	if len(told) != 1 {
		t.Errorf("logf told %d times, want once: %q", len(told), told)
	}
}
