package incus_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/incusexec/incusexec/executor/incus"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/lxc/incus/v6/shared/api"
	"github.com/matryer/is"
)

// TestEnsurePoolPrefersCopyOnWrite: without a driver, EnsurePool creates
// btrfs on a loop file where the daemon can (the harness made its own pool
// btrfs, so this host can), and says so.
func TestEnsurePoolPrefersCopyOnWrite(t *testing.T) {
	is := is.New(t)
	d := incustest.Shared(t)
	if d.PoolDriver != "btrfs" {
		t.Skipf("this host cannot make a btrfs pool on a loop file (the harness pool is %s); the fallback is tested below", d.PoolDriver)
	}
	name, owner := incustest.UniqueName("pool-"), incustest.UniqueName("owner-")
	t.Cleanup(func() { _ = incus.RemovePool(t.Context(), d.Client, name, owner) })
	ch, err := incus.EnsurePoolChoice(t.Context(), d.Client, incus.PoolSpec{Name: name, Owner: owner, Size: "5GiB"})
	is.NoErr(err)
	is.True(ch.Created)
	is.Equal(ch.Driver, "btrfs")
	is.True(strings.Contains(ch.Why, "copy-on-write"))
	p, _, err := d.Client.GetStoragePool(name)
	is.NoErr(err)
	is.Equal(p.Driver, "btrfs")
	is.Equal(p.Config["size"], "5GiB")
	is.Equal(p.Config[executor.OwnerKey], owner)
	is.NoErr(incus.RemovePool(t.Context(), d.Client, name, owner))
}

// noBtrfs is the real daemon as seen by a host without btrfs: GetServer
// lists every driver but btrfs, or creating a btrfs pool fails.
type noBtrfs struct {
	incus.PoolClient
	hide, refuse bool
}

func (n noBtrfs) GetServer() (*api.Server, string, error) {
	srv, etag, err := n.PoolClient.GetServer()
	if err == nil && n.hide {
		cp := *srv
		cp.Environment.StorageSupportedDrivers = slices.DeleteFunc(slices.Clone(srv.Environment.StorageSupportedDrivers),
			func(d api.ServerStorageDriverInfo) bool { return d.Name == "btrfs" })
		srv = &cp
	}
	return srv, etag, err
}

func (n noBtrfs) CreateStoragePool(p api.StoragePoolsPost) error {
	if n.refuse && p.Driver == "btrfs" {
		return errors.New("Failed to run: mkfs.btrfs: exec: not found")
	}
	return n.PoolClient.CreateStoragePool(p)
}

func TestEnsurePoolFallsBackToDir(t *testing.T) {
	d := incustest.Shared(t)
	for _, tc := range []struct {
		what   string
		client noBtrfs
		why    string
	}{
		{"daemon without btrfs", noBtrfs{PoolClient: d.Client, hide: true}, "does not support btrfs"},
		{"btrfs creation fails", noBtrfs{PoolClient: d.Client, refuse: true}, "mkfs.btrfs"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			is := is.New(t)
			name, owner := incustest.UniqueName("pool-"), incustest.UniqueName("owner-")
			t.Cleanup(func() { _ = incus.RemovePool(t.Context(), d.Client, name, owner) })
			ch, err := incus.EnsurePoolChoice(t.Context(), tc.client, incus.PoolSpec{Name: name, Owner: owner})
			is.NoErr(err)
			is.True(ch.Created)
			is.Equal(ch.Driver, "dir")
			is.True(strings.Contains(ch.Why, tc.why)) // says why not copy-on-write
			p, _, err := d.Client.GetStoragePool(name)
			is.NoErr(err)
			is.Equal(p.Driver, "dir")
		})
	}
}
