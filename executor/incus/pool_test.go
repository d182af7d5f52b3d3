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

func TestEnsurePoolCreatesReusesAndRemoves(t *testing.T) {
	is := is.New(t)
	d := incustest.Shared(t)
	ctx := t.Context()
	name, owner := incustest.UniqueName("pool-"), incustest.UniqueName("owner-")
	t.Cleanup(func() { _ = d.Client.DeleteStoragePool(name) })

	got, created, err := incus.EnsurePool(ctx, d.Client, incus.PoolSpec{Name: name, Owner: owner, Driver: "dir"})
	is.NoErr(err)
	is.Equal(got, name)
	is.True(created)
	p, _, err := d.Client.GetStoragePool(name)
	is.NoErr(err)
	is.Equal(p.Driver, "dir")
	is.Equal(p.Config[executor.OwnerKey], owner)
	is.Equal(p.Description, "created by incusexec for "+owner)

	got, created, err = incus.EnsurePool(ctx, d.Client, incus.PoolSpec{Name: name, Owner: owner})
	is.NoErr(err)
	is.Equal(got, name)
	is.True(!created) // second call uses the pool

	err = incus.RemovePool(ctx, d.Client, name, "someone-else")
	is.True(errors.Is(err, executor.ErrNotAllowed))
	is.True(strings.Contains(err.Error(), name))

	vol := incustest.UniqueName("vol-")
	is.NoErr(d.Client.CreateStoragePoolVolume(name, api.StorageVolumesPost{Name: vol, Type: "custom"}))
	err = incus.RemovePool(ctx, d.Client, name, owner)
	is.True(errors.Is(err, incus.ErrInUse))
	is.True(strings.Contains(err.Error(), vol)) // names the user
	_, _, err = d.Client.GetStoragePool(name)
	is.NoErr(err) // still there

	is.NoErr(d.Client.DeleteStoragePoolVolume(name, "custom", vol))
	is.NoErr(incus.RemovePool(ctx, d.Client, name, owner))
	names, err := d.Client.GetStoragePoolNames()
	is.NoErr(err)
	is.True(!slices.Contains(names, name))
	is.NoErr(incus.RemovePool(ctx, d.Client, name, owner)) // gone: no error
}

func TestEnsurePoolUsesAnExistingPool(t *testing.T) {
	is := is.New(t)
	d := incustest.Shared(t)
	got, created, err := incus.EnsurePool(t.Context(), d.Client, incus.PoolSpec{Owner: incustest.UniqueName("owner-")})
	is.NoErr(err)
	is.True(!created)
	names, err := d.Client.GetStoragePoolNames()
	is.NoErr(err)
	is.True(slices.Contains(names, got))
	is.True(!slices.Contains(names, "incusexec")) // the fallback was not made

	got, created, err = incus.EnsurePool(t.Context(), d.Client, incus.PoolSpec{Name: d.Pool, Owner: "x"})
	is.NoErr(err)
	is.Equal(got, d.Pool)
	is.True(!created)
}

func TestEnsurePoolBadInput(t *testing.T) {
	d := incustest.Shared(t)
	name := incustest.UniqueName("pool-")
	for _, tc := range []struct {
		what string
		spec incus.PoolSpec
		want string
	}{
		{"unknown driver", incus.PoolSpec{Name: name, Owner: "o", Driver: "nosuchfs"}, `"nosuchfs"`},
		{"no owner", incus.PoolSpec{Name: name}, "owner"},
		{"slash in name", incus.PoolSpec{Name: name + "/x", Owner: "o"}, name + "/x"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			is := is.New(t)
			_, created, err := incus.EnsurePool(t.Context(), d.Client, tc.spec)
			is.True(errors.Is(err, executor.ErrInvalid))
			is.True(strings.Contains(err.Error(), tc.want)) // names the fault
			is.True(!created)
			names, err := d.Client.GetStoragePoolNames()
			is.NoErr(err)
			is.True(!slices.Contains(names, name)) // nothing created
		})
	}
	is := is.New(t)
	err := incus.RemovePool(t.Context(), d.Client, "", "o")
	is.True(errors.Is(err, executor.ErrInvalid))
}
