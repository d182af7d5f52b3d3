package executor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/incusexec/incusexec/internal/incusop"
	"github.com/lxc/incus/v6/shared/api"
)

// ErrInUse reports a storage pool that RemovePool leaves because something
// still uses it.
var ErrInUse = errors.New("in use")

// PoolOwnerKey is the config key that labels a storage pool EnsurePool
// created with its owner.
const PoolOwnerKey = "user.incusexec.owner"

// PoolClient is the part of the Incus client that EnsurePool and RemovePool
// use (incus.InstanceServer has it).
type PoolClient interface {
	GetServer() (*api.Server, string, error)
	GetStoragePoolNames() ([]string, error)
	GetStoragePool(name string) (*api.StoragePool, string, error)
	CreateStoragePool(pool api.StoragePoolsPost) error
	DeleteStoragePool(name string) error
}

// PoolSpec says which storage pool to use, and how to create it when the
// daemon lacks it. A fresh Incus daemon has no storage pool.
type PoolSpec struct {
	// Name is the pool to use; it is created when missing. Empty means any
	// pool of the daemon ("default" first, else the first one), and
	// Fallback is created only when the daemon has none.
	Name string
	// Fallback names the pool created when Name is empty and the daemon
	// has no pool (default "incusexec").
	Fallback string
	// Driver of a created pool (default "dir"); the daemon must support it.
	Driver string
	// Owner labels a created pool (config PoolOwnerKey); required.
	// RemovePool removes only pools of this owner.
	Owner string
	// Description of a created pool (default "created by incusexec for
	// <Owner>").
	Description string
}

// EnsurePool returns the storage pool to use as spec says, and whether it
// created it. An existing pool is used as it is, whoever made it and
// whatever its driver. Bad input (no owner, a driver the daemon does not
// support) is an error wrapping ErrInvalid, and nothing is created.
func EnsurePool(ctx context.Context, c PoolClient, spec PoolSpec) (name string, created bool, err error) {
	if spec.Owner == "" {
		return "", false, fmt.Errorf("storage pool: empty owner: %w", ErrInvalid)
	}
	if spec.Driver == "" {
		spec.Driver = "dir"
	}
	if spec.Fallback == "" {
		spec.Fallback = "incusexec"
	}
	if spec.Description == "" {
		spec.Description = "created by incusexec for " + spec.Owner
	}
	for _, n := range []string{spec.Name, spec.Fallback} {
		if strings.ContainsAny(n, "/ \t\n") || strings.HasPrefix(n, ".") {
			return "", false, fmt.Errorf("storage pool name %q: no slash, space or leading dot allowed: %w", n, ErrInvalid)
		}
	}
	c = incusop.Bind(ctx, c)
	names, err := c.GetStoragePoolNames()
	if err != nil {
		return "", false, fmt.Errorf("storage pools: %w", err)
	}
	name = spec.Name
	if name == "" {
		switch {
		case slices.Contains(names, "default"):
			return "default", false, nil
		case len(names) > 0:
			return names[0], false, nil
		}
		name = spec.Fallback
	}
	if slices.Contains(names, name) {
		return name, false, nil
	}
	srv, _, err := c.GetServer()
	if err != nil {
		return "", false, fmt.Errorf("storage pool %s: server info: %w", name, err)
	}
	var drivers []string
	for _, d := range srv.Environment.StorageSupportedDrivers {
		drivers = append(drivers, d.Name)
	}
	if !slices.Contains(drivers, spec.Driver) {
		return "", false, fmt.Errorf("storage pool %s: driver %q not supported by the daemon (it has %s): %w",
			name, spec.Driver, strings.Join(drivers, ", "), ErrInvalid)
	}
	err = c.CreateStoragePool(api.StoragePoolsPost{
		Name: name, Driver: spec.Driver,
		StoragePoolPut: api.StoragePoolPut{
			Config:      map[string]string{PoolOwnerKey: spec.Owner},
			Description: spec.Description,
		},
	})
	if err != nil {
		return "", false, fmt.Errorf("create storage pool %s (driver %s): %w", name, spec.Driver, err)
	}
	return name, true, nil
}

// RemovePool deletes the storage pool name if owner created it (its config
// PoolOwnerKey is owner) and nothing uses it. A missing pool is no error;
// a pool of another owner is an error wrapping ErrNotAllowed, one in use an
// error wrapping ErrInUse that names its users.
func RemovePool(ctx context.Context, c PoolClient, name, owner string) error {
	if name == "" || owner == "" {
		return fmt.Errorf("remove storage pool %q of owner %q: empty name or owner: %w", name, owner, ErrInvalid)
	}
	c = incusop.Bind(ctx, c)
	p, _, err := c.GetStoragePool(name)
	if api.StatusErrorCheck(err, 404) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("storage pool %s: %w", name, err)
	}
	if got := p.Config[PoolOwnerKey]; got != owner {
		return fmt.Errorf("storage pool %s: owned by %q, not %q: %w", name, got, owner, ErrNotAllowed)
	}
	if len(p.UsedBy) > 0 {
		return fmt.Errorf("storage pool %s: used by %s: %w", name, strings.Join(p.UsedBy, ", "), ErrInUse)
	}
	if err := c.DeleteStoragePool(name); err != nil && !api.StatusErrorCheck(err, 404) {
		return fmt.Errorf("delete storage pool %s: %w", name, err)
	}
	return nil
}
