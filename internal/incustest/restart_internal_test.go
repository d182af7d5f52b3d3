package incustest

import (
	"context"
	"errors"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestWaitNetworksReportsANetworkOutOfService makes incusd's bridge fail to
// start after a restart (its DNS address taken when dnsmasq is to bind it)
// and checks that WaitNetworks sees it, with incusd's reason, and does not
// return before its context ends. A healthy daemon's networks are in service.
func TestWaitNetworksReportsANetworkOutOfService(t *testing.T) {
	d := Private(t, Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if err := d.WaitNetworks(ctx, t.Logf); err != nil {
		t.Fatalf("fresh daemon: %v", err)
	}
	n, _, err := d.Client.GetNetwork(d.Network)
	if err != nil {
		t.Fatal(err)
	}
	ip, _, err := net.ParseCIDR(n.Config["ipv4.address"])
	if err != nil {
		t.Fatalf("bridge address %q: %v", n.Config["ipv4.address"], err)
	}
	var held []interface{ Close() error }
	defer func() {
		for _, c := range held {
			_ = c.Close()
		}
	}()
	err = d.relaunch(ctx, syscall.SIGTERM, "restart", func() error {
		// dnsmasq outlives incusd; stop it and take its address.
		if out, err := exec.Command("pkill", "-f", "^dnsmasq .*"+d.Dir+"/").CombinedOutput(); err != nil {
			return errors.New("pkill dnsmasq: " + strings.TrimSpace(string(out)) + ": " + err.Error())
		}
		addr := net.JoinHostPort(ip.String(), "53")
		for deadline := time.Now().Add(10 * time.Second); ; {
			u, err := net.ListenPacket("udp", addr)
			if err == nil {
				held = append(held, u)
				return nil
			}
			if time.Now().After(deadline) {
				return err
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	var told []string
	short, cancelShort := context.WithTimeout(ctx, 3*time.Second)
	defer cancelShort()
	err = d.WaitNetworks(short, func(f string, a ...any) { told = append(told, f) })
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "Address already in use") {
		t.Fatalf("WaitNetworks with the bridge's DNS address taken: %v", err)
	}
	if len(told) != 1 {
		t.Errorf("logf told %d times, want once: %q", len(told), told)
	}
}
