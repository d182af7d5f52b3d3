package instance_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/incusexec/incusexec/instance"
	"github.com/matryer/is"
)

// TestAddresses reads a running instance's address on the bridge (the one
// the DHCP client bound) and refuses a stopped instance.
func TestAddresses(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	d, m, _ := setup(t, instance.Config{})
	in := launch(t, m, instance.Spec{Ready: instance.Ready{NIC: "eth0", Family: "inet"}})
	ctx := ctxFor(t, time.Minute)

	addrs, err := in.Addresses(ctx)
	is.NoErr(err)
	is.True(len(addrs) > 0)
	first := addrs[0]
	is.Equal(first.NIC, "eth0")
	is.True(first.Addr.Is4())
	is.True(d.Gateway.Contains(first.Addr)) // on the daemon's bridge
	is.Equal(first.Bits, d.Gateway.Bits())  // with the bridge's prefix
	is.True(first.Addr != d.Gateway.Addr()) // not the host's end
	is.True(first.Prefix().Masked() == d.Gateway.Masked())
	for _, a := range addrs {
		is.True(a.NIC != "lo")                // no loopback
		is.True(!a.Addr.IsLinkLocalUnicast()) // no link-local
	}
	// The instance sees the same address on eth0.
	is.True(slices.Contains(strings.Fields(run(t, in, "ip", "-4", "-o", "addr", "show", "dev", "eth0")), first.Prefix().String()))

	is.NoErr(in.Stop(ctx))
	_, err = in.Addresses(ctx)
	is.True(errors.Is(err, instance.ErrNotRunning))
}
