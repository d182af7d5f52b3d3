package incustest_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/lxc/incus/v6/shared/api"
	"github.com/matryer/is"
)

// TestCluster starts a three-member cluster, its pool a btrfs loop file
// per member, and checks what users of the harness rely on: every member online and answering on its own socket,
// the bridge on every member, an instance launched on each member through
// the HTTPS client, a client certificate the cluster trusts and one it
// refuses, a member stopped and started again; and that stopping the
// cluster, with a member down and instances on it, leaves nothing (no
// process, mount or loop device; Stop fails otherwise).
func TestCluster(t *testing.T) {
	start := time.Now()
	c := incustest.PrivateCluster(t, incustest.ClusterOptions{
		// btrfs: a loop file per member, which a member's restart and
		// the cluster's stop must handle (dir pools are the shared
		// clusters' of the other packages).
		Pool: "btrfs", PoolSize: "1GiB",
		OfflineThreshold: 11 * time.Second,
		Logger:           slog.New(slog.NewTextHandler(t.Output(), nil)),
	})
	t.Logf("cluster started in %s; HTTPS at %s", time.Since(start).Round(time.Millisecond), c.Members[0].HostAddress)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	t.Run("forms", func(t *testing.T) {
		is := is.New(t)
		is.Equal(len(c.Members), 3)
		for i, m := range c.Members {
			srv, _, err := m.Client.GetServer()
			is.NoErr(err)
			is.Equal(srv.Environment.ServerName, m.Name)
			is.True(srv.Environment.ServerClustered)
			is.Equal(m.Address, fmt.Sprintf("127.0.0.%d:8443", 2+i))

			members, err := m.Client.GetClusterMembers()
			is.NoErr(err)
			var names []string
			for _, cm := range members {
				is.Equal(cm.Status, "Online") // as seen from this member
				names = append(names, cm.ServerName)
			}
			slices.Sort(names)
			is.Equal(names, []string{"member1", "member2", "member3"})

			pool, _, err := m.Client.UseTarget(m.Name).GetStoragePool(c.Pool)
			is.NoErr(err)
			is.Equal(pool.Status, "Created")
			is.Equal(pool.Driver, "btrfs")
			network, _, err := m.Client.UseTarget(m.Name).GetNetwork(c.Network)
			is.NoErr(err)
			is.Equal(network.Status, "Created")
			is.Equal(network.Config["ipv4.nat"], "false")

			ifs, err := m.Interfaces()
			is.NoErr(err)
			is.True(slices.ContainsFunc(ifs, func(i net.Interface) bool { return i.Name == c.Network })) // bridge in the member's namespace
			conn, err := m.DialContext(ctx, "tcp", net.JoinHostPort(c.Gateway.Addr().String(), "53"))
			is.NoErr(err) // the member's dnsmasq, on its bridge
			conn.Close()
		}
	})

	t.Run("member filesystems", func(t *testing.T) {
		is := is.New(t)
		dir := t.TempDir()
		m := c.Members[1]
		out, err := m.Command(ctx, "sh", "-c", "mount -t tmpfs tmpfs "+dir+" && echo member2 >"+dir+"/only-here && cat "+dir+"/only-here").CombinedOutput()
		is.NoErr(err)
		is.Equal(string(out), "member2\n")
		_, err = os.Stat(filepath.Join(dir, "only-here"))
		is.True(os.IsNotExist(err)) // not on this host
		err = c.Members[2].Command(ctx, "test", "-e", filepath.Join(dir, "only-here")).Run()
		is.True(err != nil) // nor on member3
	})

	names := make([]string, len(c.Members))
	t.Run("launches on each member", func(t *testing.T) {
		is := is.New(t)
		c.BusyboxImage(t)
		var wg sync.WaitGroup
		errs := make([]error, len(c.Members))
		for i, m := range c.Members {
			names[i] = incustest.UniqueName("cl-")
			wg.Go(func() {
				op, err := c.Client.UseTarget(m.Name).CreateInstance(api.InstancesPost{
					Name: names[i], Source: api.InstanceSource{Type: "image", Alias: incustest.BusyboxAlias}, Start: true,
				})
				if err == nil {
					err = op.WaitContext(ctx)
				}
				errs[i] = err
			})
		}
		wg.Wait()
		for i, m := range c.Members {
			is.NoErr(errs[i])
			inst, _, err := c.Client.GetInstance(names[i])
			is.NoErr(err)
			is.Equal(inst.Location, m.Name)
			is.Equal(inst.StatusCode, api.Running)
			// The member's own bridge and dnsmasq hand out the lease.
			addr := waitIPv4(ctx, t, m.Client, names[i])
			is.True(c.Gateway.Masked().Contains(addr))
		}
	})

	t.Run("HTTPS client certificates", func(t *testing.T) {
		is := is.New(t)
		srv, _, err := c.Client.GetServer()
		is.NoErr(err)
		is.Equal(srv.Auth, "trusted")
		got, err := c.Client.GetInstanceNames(api.InstanceTypeAny)
		is.NoErr(err)
		for _, n := range names {
			is.True(slices.Contains(got, n))
		}

		cert, key, err := incustest.NewClientCertificate("stranger")
		is.NoErr(err)
		for _, tc := range []struct{ name, cert, key string }{
			{"untrusted certificate", cert, key},
			{"no certificate", "", ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				is := is.New(t)
				client, err := c.ConnectHTTPS(1, tc.cert, tc.key)
				is.NoErr(err)
				defer client.Disconnect()
				srv, _, err := client.GetServer()
				is.NoErr(err)
				is.Equal(srv.Auth, "untrusted")
				_, err = client.GetInstanceNames(api.InstanceTypeAny)
				is.True(api.StatusErrorCheck(err, http.StatusForbidden)) // refused
			})
		}
	})

	t.Run("member stops and starts", func(t *testing.T) {
		is := is.New(t)
		is.NoErr(c.StopMember(ctx, 2))
		is.True(!c.Members[2].Running())
		_, err := c.ConnectHTTPS(2, c.ClientCert, c.ClientKey)
		is.True(err != nil) // its API is gone
		is.NoErr(c.WaitMemberStatus(ctx, "member3", "Offline"))
		insts, err := c.Client.GetInstances(api.InstanceTypeAny)
		is.NoErr(err)
		i := slices.IndexFunc(insts, func(in api.Instance) bool { return in.Name == names[2] })
		is.True(i >= 0)
		is.Equal(insts[i].Location, "member3")
		is.Equal(insts[i].Status, "Error") // out of reach

		is.NoErr(c.StartMember(ctx, 2))
		st, _, err := c.Members[2].Client.GetInstanceState(names[2])
		is.NoErr(err)
		is.Equal(st.StatusCode, api.Running) // kept running while its daemon was down
	})

	t.Run("stop leaves nothing", func(t *testing.T) {
		is := is.New(t)
		is.NoErr(c.StopMember(ctx, 1)) // Stop brings it back to delete its instance
		start := time.Now()
		is.NoErr(c.Stop(ctx))
		t.Logf("cluster stopped in %s", time.Since(start).Round(time.Millisecond))
		_, err := os.Stat(c.Dir)
		is.True(os.IsNotExist(err))
	})
}

// TestStartClusterBadInput checks that bad options are refused with an
// error naming them, and that a cluster failing half-way through its set-up
// is torn down completely.
func TestStartClusterBadInput(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, tc := range []struct {
		name string
		opts incustest.ClusterOptions
		want string
	}{
		{"members", incustest.ClusterOptions{Members: 9}, "9 members"},
		{"driver", incustest.ClusterOptions{Pool: "zfs"}, `"zfs"`},
		{"offline threshold", incustest.ClusterOptions{OfflineThreshold: 5 * time.Second}, "offline threshold 5s"},
		{"pool size", incustest.ClusterOptions{Members: 2, Pool: "btrfs", PoolSize: "lots", NoNetwork: true}, "btrfs storage pool on member1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			c, err := incustest.StartCluster(ctx, tc.opts)
			if errors.Is(err, incustest.ErrUnavailable) {
				incustest.SkipOrFail(t, err)
			}
			is.True(c == nil)
			is.True(err != nil)
			is.True(strings.Contains(err.Error(), tc.want)) // names the culprit
			left, _ := filepath.Glob(filepath.Join(os.TempDir(), fmt.Sprintf("incustest-cluster-%d-*", os.Getpid())))
			is.Equal(left, []string(nil)) // nothing half-done
		})
	}
}
