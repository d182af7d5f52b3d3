package netbridge_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/incusexec/incusexec/netbridge"
	incus "github.com/lxc/incus/v6/client"
	"github.com/lxc/incus/v6/shared/api"
	"github.com/matryer/is"
)

func TestMain(m *testing.M) { incustest.Main(m) }

func newManager(t *testing.T, d *incustest.Daemon) *netbridge.Manager {
	return netbridge.New(d.Client, netbridge.Options{Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))})
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// uniquePrefix returns a prefix no other test uses, short enough for a
// bridge name.
func uniquePrefix() string { return incustest.UniqueName("nb") } // "nb" + 8 hex = 10 bytes

// cleanupOwner removes what a test's owner left, instances first.
func cleanupOwner(t *testing.T, d *incustest.Daemon, m *netbridge.Manager, owner string) {
	t.Cleanup(func() {
		if _, err := m.Cleanup(context.Background(), owner); err != nil {
			t.Errorf("cleanup of %s: %v", owner, err)
		}
	})
}

func TestEnsureTwiceIsNoOp(t *testing.T) {
	is := is.New(t)
	d := incustest.Shared(t)
	ctx := testContext(t)
	m := newManager(t, d)
	prefix := uniquePrefix()
	cleanupOwner(t, d, m, prefix)

	spec := netbridge.NetworkSpec{Prefix: prefix, MTU: 1400, Description: "test bridge"}
	n, err := m.Ensure(ctx, spec)
	is.NoErr(err)
	is.Equal(n.Name, prefix+"-br")
	is.Equal(len(n.Changes), 1)
	is.Equal(n.Changes[0].Action, netbridge.Created)
	is.True(n.IPv4.IsValid())
	is.True(!n.IPv4.Masked().Overlaps(d.Gateway.Masked())) // auto subnet avoids the other bridge

	got, _, err := d.Client.GetNetwork(n.Name)
	is.NoErr(err)
	is.Equal(got.Config[executor.OwnerKey], prefix)
	is.Equal(got.Config["ipv4.nat"], "false")
	is.Equal(got.Config["ipv6.address"], "none")
	is.Equal(got.Config["bridge.mtu"], "1400")
	is.Equal(got.Config["ipv4.address"], n.IPv4.String())
	is.Equal(got.Description, "test bridge")

	again, err := m.Ensure(ctx, spec)
	is.NoErr(err)
	is.Equal(len(again.Changes), 0) // second call changes nothing
	is.Equal(again.IPv4, n.IPv4)

	pspec := netbridge.ProfileSpec{Name: prefix + "-p", Owner: prefix, Network: n.Name, Pool: d.Pool,
		Memory: "256MiB", Config: map[string]string{"security.nesting": "true"}}
	p, err := m.EnsureProfile(ctx, pspec)
	is.NoErr(err)
	is.Equal(len(p.Changes), 1)
	is.Equal(p.Changes[0].Action, netbridge.Created)
	p, err = m.EnsureProfile(ctx, pspec)
	is.NoErr(err)
	is.Equal(len(p.Changes), 0)
}

func TestEnsureCorrectsDriftInOwnedKeysOnly(t *testing.T) {
	is := is.New(t)
	d := incustest.Shared(t)
	ctx := testContext(t)
	m := newManager(t, d)
	prefix := uniquePrefix()
	cleanupOwner(t, d, m, prefix)

	spec := netbridge.NetworkSpec{Prefix: prefix, MTU: 1400}
	n, err := m.Ensure(ctx, spec)
	is.NoErr(err)

	// By hand: NAT on, another MTU, a new description, and a key of our own.
	updateByHand(t, d.Client, n.Name, func(put *api.NetworkPut) {
		put.Config["ipv4.nat"] = "true"
		put.Config["bridge.mtu"] = "1300"
		put.Config["user.note"] = "keep me"
		put.Config["ipv4.dhcp.expiry"] = "2h"
		put.Description = "edited"
	})

	fixed, err := m.Ensure(ctx, spec)
	is.NoErr(err)
	is.Equal(len(fixed.Changes), 1)
	is.Equal(fixed.Changes[0].Action, netbridge.Updated)
	is.Equal(fixed.Changes[0].Keys, []string{"bridge.mtu", "description", "ipv4.nat"})
	net, _, err := d.Client.GetNetwork(n.Name)
	is.NoErr(err)
	is.Equal(net.Config["ipv4.nat"], "false")
	is.Equal(net.Config["bridge.mtu"], "1400")
	is.Equal(net.Config["user.note"], "keep me")   // not owned: left alone
	is.Equal(net.Config["ipv4.dhcp.expiry"], "2h") // not owned: left alone
	is.Equal(net.Config["ipv4.address"], n.IPv4.String())

	// Profiles: a changed limit, a removed NIC and a foreign key.
	pspec := netbridge.ProfileSpec{Name: prefix + "-p", Owner: prefix, Network: n.Name, NICName: "host0", Pool: d.Pool,
		Memory: "256MiB", Processes: 500, Config: map[string]string{"raw.lxc": "lxc.mount.auto=sys"}}
	_, err = m.EnsureProfile(ctx, pspec)
	is.NoErr(err)
	prof, etag, err := d.Client.GetProfile(pspec.Name)
	is.NoErr(err)
	pput := prof.Writable()
	pput.Config["limits.memory"] = "1GiB"
	pput.Config["user.note"] = "keep me"
	delete(pput.Devices, "eth0")
	pput.Devices["extra"] = map[string]string{"type": "disk", "source": "/tmp", "path": "/mnt"}
	is.NoErr(d.Client.UpdateProfile(pspec.Name, pput, etag))

	p, err := m.EnsureProfile(ctx, pspec)
	is.NoErr(err)
	is.Equal(len(p.Changes), 1)
	is.Equal(p.Changes[0].Keys, []string{"devices.eth0", "limits.memory"})
	prof, _, err = d.Client.GetProfile(pspec.Name)
	is.NoErr(err)
	is.Equal(prof.Config["limits.memory"], "256MiB")
	is.Equal(prof.Config["limits.processes"], "500")
	is.Equal(prof.Config["user.note"], "keep me")
	is.Equal(prof.Devices["eth0"], map[string]string{"type": "nic", "network": n.Name, "name": "host0"})
	is.Equal(prof.Devices["extra"]["path"], "/mnt") // not owned: left alone
}

func TestConcurrentEnsuresCreateOneOfEach(t *testing.T) {
	is := is.New(t)
	d := incustest.Shared(t)
	ctx := testContext(t)
	prefix := uniquePrefix()
	cleanupOwner(t, d, newManager(t, d), prefix)

	const workers = 10
	var (
		wg                  sync.WaitGroup
		mu                  sync.Mutex
		netsMade, profsMade int
		subnets             = map[netip.Prefix]bool{}
		errs                []error
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := newManager(t, d) // as if each were a process of its own
			n, err := m.Ensure(ctx, netbridge.NetworkSpec{Prefix: prefix})
			var p *netbridge.Profile
			if err == nil {
				p, err = m.EnsureProfile(ctx, netbridge.ProfileSpec{Name: prefix + "-p", Owner: prefix, Network: n.Name, Pool: d.Pool})
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			subnets[n.IPv4] = true
			for _, c := range n.Changes {
				if c.Kind == netbridge.KindNetwork && c.Action == netbridge.Created {
					netsMade++
				}
			}
			for _, c := range p.Changes {
				if c.Kind == netbridge.KindProfile && c.Action == netbridge.Created {
					profsMade++
				}
			}
		}()
	}
	wg.Wait()
	is.Equal(errs, nil)
	is.Equal(netsMade, 1)  // one caller reports creating the network
	is.Equal(profsMade, 1) // and one the profile
	is.Equal(len(subnets), 1)

	nets, err := d.Client.GetNetworks()
	is.NoErr(err)
	owned := 0
	for _, n := range nets {
		if n.Config[executor.OwnerKey] == prefix {
			owned++
		}
	}
	is.Equal(owned, 1)
	profs, err := d.Client.GetProfiles()
	is.NoErr(err)
	owned = 0
	for _, p := range profs {
		if p.Config[executor.OwnerKey] == prefix {
			owned++
		}
	}
	is.Equal(owned, 1)
}

// TestProfileInstanceGetsDHCPAddress launches busybox with nothing but the
// ensured profile and checks its lease; then that strict isolation cuts it
// off from the host but not from DHCP, and that turning isolation off again
// restores access and removes the ACL.
func TestProfileInstanceGetsDHCPAddress(t *testing.T) {
	is := is.New(t)
	d := incustest.Shared(t)
	d.BusyboxImage(t)
	ctx := testContext(t)
	m := newManager(t, d)
	prefix := uniquePrefix()
	cleanupOwner(t, d, m, prefix)

	spec := netbridge.NetworkSpec{Prefix: prefix}
	n, err := m.Ensure(ctx, spec)
	is.NoErr(err)
	// Narrow the DHCP range: the lease proves this network's dnsmasq answered.
	spec.IPv4 = n.IPv4
	first := n.IPv4.Masked().Addr().Next().Next().Next().Next() // .4
	last := first.Next().Next()                                 // .6
	spec.DHCPRanges = []netbridge.DHCPRange{{First: first, Last: last}}
	n, err = m.Ensure(ctx, spec)
	is.NoErr(err)
	is.Equal(n.Changes[0].Keys, []string{"ipv4.dhcp.ranges"})

	// busybox runs udhcpc on eth0, so the NIC keeps that name here.
	pspec := netbridge.DebusineProfile(prefix, n.Name, d.Pool)
	pspec.Name = prefix + "-p"
	pspec.NICName = "eth0"
	pspec.CPU, pspec.Memory, pspec.Processes = "1", "256MiB", 200
	pspec.Config["security.nesting"] = "false"
	_, err = m.EnsureProfile(ctx, pspec)
	is.NoErr(err)

	name := incustest.UniqueName("nbc-")
	op, err := d.Client.CreateInstance(api.InstancesPost{Name: name, Type: api.InstanceTypeContainer,
		Source:      api.InstanceSource{Type: "image", Alias: incustest.BusyboxAlias},
		InstancePut: api.InstancePut{Profiles: []string{pspec.Name}},
		Start:       true,
	})
	is.NoErr(err)
	is.NoErr(op.WaitContext(ctx))
	t.Cleanup(func() { deleteInstance(d.Client, name) })

	addr := waitIPv4(ctx, t, d.Client, name, "eth0")
	is.True(!addr.Less(first) && !last.Less(addr)) // from our range, on our bridge
	inst, _, err := d.Client.GetInstance(name)
	is.NoErr(err)
	is.Equal(inst.ExpandedConfig["limits.memory"], "256MiB")
	is.Equal(inst.ExpandedConfig["raw.lxc"], "lxc.mount.auto=sys")

	// A service on the host's side of the bridge.
	ln, err := net.Listen("tcp", net.JoinHostPort(n.IPv4.Addr().String(), "0"))
	is.NoErr(err)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hello\n"))
			c.Close()
		}
	}()
	port := fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
	reach := func() bool {
		var out, stderr bytes.Buffer
		code, err := execIn(ctx, d.Client, name, []string{"nc", "-w", "5", n.IPv4.Addr().String(), port}, &out, &stderr)
		is.NoErr(err)
		return code == 0 && strings.Contains(out.String(), "hello")
	}
	is.True(reach()) // without isolation the host is reachable

	spec.Isolation = netbridge.IsolationStrict
	iso, err := m.Ensure(ctx, spec)
	is.NoErr(err)
	is.Equal(iso.ACL, netbridge.ACLName(n.Name))
	is.Equal(len(iso.Changes), 2) // ACL created, network updated
	is.Equal(iso.Changes[0].Kind, netbridge.KindACL)
	is.Equal(iso.Changes[1].Keys, []string{"security.acls"})
	is.True(!reach()) // the host is cut off

	// DHCP still answers: renew the lease by hand.
	var out, stderr bytes.Buffer
	code, err := execIn(ctx, d.Client, name, []string{"udhcpc", "-n", "-q", "-i", "eth0", "-s", "/etc/udhcpc.script", "-t", "5", "-T", "1"}, &out, &stderr)
	is.NoErr(err)
	is.Equal(code, 0) // lease obtained under isolation

	// Egress mode still keeps the host (a private address) closed.
	spec.Isolation = netbridge.IsolationEgress
	eg, err := m.Ensure(ctx, spec)
	is.NoErr(err)
	is.Equal(len(eg.Changes), 1)
	is.Equal(eg.Changes[0].Kind, netbridge.KindACL)
	is.Equal(eg.Changes[0].Keys, []string{"description", "egress"})
	eg, err = m.Ensure(ctx, spec)
	is.NoErr(err)
	is.Equal(len(eg.Changes), 0) // the rules read back as written
	is.True(!reach())

	spec.Isolation = netbridge.IsolationNone
	off, err := m.Ensure(ctx, spec)
	is.NoErr(err)
	is.Equal(len(off.Changes), 2) // network updated, ACL deleted
	is.Equal(off.Changes[1].Action, netbridge.Deleted)
	_, _, err = d.Client.GetNetworkACL(netbridge.ACLName(n.Name))
	is.True(api.StatusErrorCheck(err, 404))
	is.True(reach())
}

func TestCleanupRemovesOnlyOwnedUnused(t *testing.T) {
	is := is.New(t)
	d := incustest.Shared(t)
	ctx := testContext(t)
	m := newManager(t, d)
	mine, theirs := uniquePrefix(), uniquePrefix()
	cleanupOwner(t, d, m, theirs)

	n, err := m.Ensure(ctx, netbridge.NetworkSpec{Prefix: mine, Isolation: netbridge.IsolationEgress})
	is.NoErr(err)
	_, err = m.EnsureProfile(ctx, netbridge.ProfileSpec{Name: mine + "-p", Owner: mine, Network: n.Name, Pool: d.Pool})
	is.NoErr(err)
	other, err := m.Ensure(ctx, netbridge.NetworkSpec{Prefix: theirs})
	is.NoErr(err)
	_, err = m.EnsureProfile(ctx, netbridge.ProfileSpec{Name: theirs + "-p", Owner: theirs, Network: other.Name})
	is.NoErr(err)
	unlabelled := incustest.UniqueName("nbu-")
	is.NoErr(d.Client.CreateProfile(api.ProfilesPost{Name: unlabelled}))
	t.Cleanup(func() { _ = d.Client.DeleteProfile(unlabelled) })

	// An instance (empty, never started) on my profile keeps everything.
	inst := incustest.UniqueName("nbi-")
	op, err := d.Client.CreateInstance(api.InstancesPost{Name: inst, Type: api.InstanceTypeContainer,
		Source: api.InstanceSource{Type: "none"}, InstancePut: api.InstancePut{Profiles: []string{mine + "-p"}}})
	is.NoErr(err)
	is.NoErr(op.WaitContext(ctx))
	_, err = m.Cleanup(ctx, mine)
	is.True(errors.Is(err, netbridge.ErrInUse))
	is.True(strings.Contains(err.Error(), "profile "+mine+"-p is used by instance "+inst))
	_, _, err = d.Client.GetNetwork(n.Name)
	is.NoErr(err) // nothing removed

	deleteInstance(d.Client, inst)
	done, err := m.Cleanup(ctx, mine)
	is.NoErr(err)
	var gone []string
	for _, c := range done {
		gone = append(gone, c.Kind+" "+c.Name)
	}
	is.Equal(gone, []string{"profile " + mine + "-p", "network " + n.Name, "network-acl " + netbridge.ACLName(n.Name)})
	_, _, err = d.Client.GetNetwork(n.Name)
	is.True(api.StatusErrorCheck(err, 404))

	// Others' and unlabelled objects are all still there.
	_, _, err = d.Client.GetNetwork(other.Name)
	is.NoErr(err)
	_, _, err = d.Client.GetProfile(theirs + "-p")
	is.NoErr(err)
	_, _, err = d.Client.GetProfile(unlabelled)
	is.NoErr(err)
	_, _, err = d.Client.GetNetwork(d.Network)
	is.NoErr(err)

	// A network of mine used by a profile I do not own is in use too.
	n, err = m.Ensure(ctx, netbridge.NetworkSpec{Prefix: mine})
	is.NoErr(err)
	p, etag, err := d.Client.GetProfile(unlabelled)
	is.NoErr(err)
	put := p.Writable()
	put.Devices = map[string]map[string]string{"eth1": {"type": "nic", "network": n.Name}}
	is.NoErr(d.Client.UpdateProfile(unlabelled, put, etag))
	_, err = m.Cleanup(ctx, mine)
	is.True(errors.Is(err, netbridge.ErrInUse))
	is.True(strings.Contains(err.Error(), "network "+n.Name+" is used by profile "+unlabelled))
	is.NoErr(d.Client.DeleteProfile(unlabelled))
	_, err = m.Cleanup(ctx, mine)
	is.NoErr(err)
}

func TestBadInputCreatesNothing(t *testing.T) {
	d := incustest.Shared(t)
	ctx := testContext(t)
	m := newManager(t, d)
	prefix := uniquePrefix()
	cleanupOwner(t, d, m, prefix)
	n, err := m.Ensure(ctx, netbridge.NetworkSpec{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	free := func() netip.Prefix { // a subnet no one uses, for cases failing for another reason
		used, _ := netbridge.LocalUsedSubnets()
		var ps []netip.Prefix
		for _, u := range used {
			ps = append(ps, u.Prefix)
		}
		p, err := netbridge.PickSubnet(prefix+"free", netip.MustParsePrefix("10.0.0.0/8"), 24, append(ps, n.IPv4.Masked()))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}()

	for _, tc := range []struct {
		name   string
		run    func() error
		want   error
		naming string
	}{
		{"invalid name", func() error {
			_, err := m.Ensure(ctx, netbridge.NetworkSpec{Name: "bad_name!", Owner: prefix})
			return err
		}, netbridge.ErrInvalid, "bad_name!"},
		{"prefix too long", func() error {
			_, err := m.Ensure(ctx, netbridge.NetworkSpec{Prefix: prefix + "xyz"})
			return err
		}, netbridge.ErrInvalid, prefix + "xyz"},
		{"subnet of the harness bridge", func() error {
			_, err := m.Ensure(ctx, netbridge.NetworkSpec{Prefix: prefix[:9] + "o", Owner: prefix, IPv4: d.Gateway, Isolation: netbridge.IsolationStrict})
			return err
		}, netbridge.ErrSubnetInUse, d.Network},
		{"subnet of another ensured bridge", func() error {
			_, err := m.Ensure(ctx, netbridge.NetworkSpec{Prefix: prefix[:9] + "o", Owner: prefix, IPv4: n.IPv4})
			return err
		}, netbridge.ErrSubnetInUse, n.Name},
		{"DHCP range outside", func() error {
			_, err := m.Ensure(ctx, netbridge.NetworkSpec{Prefix: prefix[:9] + "o", Owner: prefix, IPv4: free,
				DHCPRanges: []netbridge.DHCPRange{{First: netip.MustParseAddr("192.0.2.1"), Last: netip.MustParseAddr("192.0.2.9")}}})
			return err
		}, netbridge.ErrInvalid, "192.0.2.1-192.0.2.9"},
		{"missing pool", func() error {
			_, err := m.EnsureProfile(ctx, netbridge.ProfileSpec{Name: prefix + "-p", Owner: prefix, Network: n.Name, Pool: "nosuchpool"})
			return err
		}, netbridge.ErrPoolNotFound, "nosuchpool"},
		{"missing network", func() error {
			_, err := m.EnsureProfile(ctx, netbridge.ProfileSpec{Name: prefix + "-p", Owner: prefix, Network: "nosuchnet", Pool: d.Pool})
			return err
		}, netbridge.ErrNetworkNotFound, "nosuchnet"},
		{"invalid interface name", func() error {
			_, err := m.EnsureProfile(ctx, netbridge.ProfileSpec{Name: prefix + "-p", Owner: prefix, Network: n.Name, NICName: "a-very-long-ifname"})
			return err
		}, netbridge.ErrInvalid, "a-very-long-ifname"},
		{"foreign network", func() error {
			_, err := m.Ensure(ctx, netbridge.NetworkSpec{Name: d.Network, Owner: prefix})
			return err
		}, netbridge.ErrNotOwned, d.Network},
		{"foreign profile", func() error {
			_, err := m.EnsureProfile(ctx, netbridge.ProfileSpec{Name: "default", Owner: prefix})
			return err
		}, netbridge.ErrNotOwned, "default"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			before := inventory(t, d.Client)
			err := tc.run()
			is.True(errors.Is(err, tc.want))                  // the right sentinel
			is.True(strings.Contains(err.Error(), tc.naming)) // names the culprit
			is.Equal(inventory(t, d.Client), before)          // nothing created or changed
		})
	}
}

// inventory describes the daemon's networks, profiles and ACLs with their
// configuration, for comparing before and after.
func inventory(t *testing.T, c incus.InstanceServer) []string {
	t.Helper()
	var out []string
	nets, err := c.GetNetworks()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nets {
		if n.Managed {
			out = append(out, fmt.Sprintf("network %s %v %q", n.Name, n.Config, n.Description))
		}
	}
	profs, err := c.GetProfiles()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range profs {
		out = append(out, fmt.Sprintf("profile %s %v %v", p.Name, p.Config, p.Devices))
	}
	acls, err := c.GetNetworkACLs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range acls {
		out = append(out, fmt.Sprintf("acl %s %v", a.Name, a.Config))
	}
	slices.Sort(out)
	return out
}

func deleteInstance(c incus.InstanceServer, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if op, err := c.UpdateInstanceState(name, api.InstanceStatePut{Action: "stop", Force: true, Timeout: -1}, ""); err == nil {
		_ = op.WaitContext(ctx)
	}
	if op, err := c.DeleteInstance(name); err == nil {
		_ = op.WaitContext(ctx)
	}
}

func execIn(ctx context.Context, c incus.InstanceServer, name string, argv []string, stdout, stderr *bytes.Buffer) (int, error) {
	done := make(chan bool)
	op, err := c.ExecInstance(name, api.InstanceExecPost{Command: argv, WaitForWS: true},
		&incus.InstanceExecArgs{Stdout: stdout, Stderr: stderr, DataDone: done})
	if err != nil {
		return -1, err
	}
	if err := op.WaitContext(ctx); err != nil {
		return -1, err
	}
	<-done
	code, _ := op.Get().Metadata["return"].(float64)
	return int(code), nil
}

func waitIPv4(ctx context.Context, t *testing.T, c incus.InstanceServer, name, nic string) netip.Addr {
	t.Helper()
	for {
		st, _, err := c.GetInstanceState(name)
		if err == nil {
			for _, a := range st.Network[nic].Addresses {
				if a.Family == "inet" && a.Scope == "global" {
					if addr, err := netip.ParseAddr(a.Address); err == nil {
						return addr
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no IPv4 address on %s of %s: %v", nic, name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
