package clustertest_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/incusexec/incusexec/netbridge"
	"github.com/matryer/is"
)

// memberHasInterface reports whether the named interface exists on the
// member (in its network namespace).
func memberHasInterface(t *testing.T, m *incustest.Member, name string) bool {
	t.Helper()
	ifs, err := m.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(ifs, func(i net.Interface) bool { return i.Name == name })
}

// TestClusterEnsureAndCleanup ensures a bridge and a profile on the
// three-member cluster over HTTPS: the bridge is defined on every member,
// then instantiated, and exists on each member's host; instances on every
// member get an address on it; ensuring again changes nothing; Cleanup
// refuses while instances use them, and then removes them from every
// member.
func TestClusterEnsureAndCleanup(t *testing.T) {
	is := is.New(t)
	c := incustest.SharedCluster(t)
	c.BusyboxImage(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	m := netbridge.New(c.Client, netbridge.Options{Logger: log})
	prefix := incustest.UniqueName("nb") // "nb" + 8 hex = 10 bytes
	cleaned := false
	t.Cleanup(func() {
		if !cleaned {
			if _, err := m.Cleanup(context.Background(), prefix); err != nil {
				t.Errorf("cleanup of %s: %v", prefix, err)
			}
		}
	})

	spec := netbridge.NetworkSpec{Prefix: prefix, Description: "cluster test bridge"}
	n, err := m.Ensure(ctx, spec)
	is.NoErr(err)
	is.Equal(len(n.Changes), 1)
	is.Equal(n.Changes[0].Action, netbridge.Created)
	is.True(!n.IPv4.Masked().Overlaps(c.Gateway.Masked())) // avoids the cluster's own bridge

	got, _, err := c.Client.GetNetwork(n.Name)
	is.NoErr(err)
	is.Equal(got.Status, "Created") // instantiated cluster-wide
	var members []string
	for _, mem := range c.Members {
		members = append(members, mem.Name)
	}
	locs := slices.Clone(got.Locations)
	slices.Sort(locs)
	is.Equal(locs, members)                          // on every member
	is.Equal(got.Description, "cluster test bridge") // kept through the per-member definition
	is.Equal(got.Config["ipv4.nat"], "false")
	is.Equal(got.Config[executor.OwnerKey], prefix)
	for _, mem := range c.Members {
		perMember, _, err := c.Client.UseTarget(mem.Name).GetNetwork(n.Name)
		is.NoErr(err)
		is.Equal(perMember.Status, "Created")
		is.True(memberHasInterface(t, mem, n.Name)) // the bridge exists on this member's host
	}

	again, err := m.Ensure(ctx, spec)
	is.NoErr(err)
	is.Equal(len(again.Changes), 0) // no-op the second time
	is.Equal(again.IPv4, n.IPv4)

	pspec := netbridge.ProfileSpec{Name: prefix + "-p", Owner: prefix, Network: n.Name, Pool: c.Pool}
	p, err := m.EnsureProfile(ctx, pspec)
	is.NoErr(err)
	is.Equal(len(p.Changes), 1)
	p, err = m.EnsureProfile(ctx, pspec)
	is.NoErr(err)
	is.Equal(len(p.Changes), 0)

	// One instance per member on the profile alone: each gets an address
	// from its own member's instance of the bridge.
	im, err := instance.New(c.Client, instance.Config{Owner: prefix, StopGrace: time.Second})
	is.NoErr(err)
	defer im.Close()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, mem := range c.Members {
		wg.Go(func() {
			in, err := im.Create(ctx, instance.Spec{
				Image: incustest.BusyboxAlias, Target: mem.Name, Profiles: []string{pspec.Name},
				Ready: instance.Ready{NIC: "eth0", Family: "inet", Timeout: time.Minute},
			})
			if err == nil {
				var loc string
				loc, err = in.Location(ctx)
				if err == nil && loc != mem.Name {
					err = errors.New(in.Name() + " landed on " + loc + ", not " + mem.Name)
				}
			}
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		})
	}
	wg.Wait()
	is.NoErr(errors.Join(errs...))

	_, err = m.Cleanup(ctx, prefix)
	is.True(errors.Is(err, netbridge.ErrInUse)) // instances still use them
	_, _, err = c.Client.GetNetwork(n.Name)
	is.NoErr(err) // nothing removed

	_, err = im.GC(ctx, instance.GCOptions{})
	is.NoErr(err)
	changes, err := m.Cleanup(ctx, prefix)
	is.NoErr(err)
	cleaned = true
	is.Equal(len(changes), 2) // the profile and the bridge
	_, _, err = c.Client.GetNetwork(n.Name)
	is.True(err != nil)
	_, _, err = c.Client.GetProfile(pspec.Name)
	is.True(err != nil)
	for _, mem := range c.Members {
		is.True(!memberHasInterface(t, mem, n.Name)) // gone from every member
	}
}
