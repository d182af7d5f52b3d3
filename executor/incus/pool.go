package incus

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/internal/incusop"
	"github.com/lxc/incus/v6/shared/api"
)

// ErrInUse reports a storage pool that RemovePool leaves because something
// still uses it.
var ErrInUse = executor.Sentinel("in use", executor.ErrNotAllowed)

// PoolClient is the part of the Incus client that EnsurePool and RemovePool
// use (incusclient.InstanceServer has it).
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
	// Driver of a created pool; the daemon must support it. Empty picks
	// copy-on-write when the daemon can: btrfs on a loop file (as `incus
	// admin init` does; a launch is then a snapshot, not a copy of the
	// whole root filesystem), else dir. PoolChoice.Why says which and why.
	Driver string
	// Size of a loop file the pool is created on (btrfs picked when Driver
	// is empty); default a fifth of the free space of the daemon's
	// directory (INCUS_DIR, else /var/lib/incus) as seen from this process,
	// between 5 and 30 GiB, as `incus admin init` does. The file is sparse.
	Size string
	// Logger, when set, is told which pool was created and why.
	Logger *slog.Logger
	// Owner labels a created pool (config executor.OwnerKey); required.
	// RemovePool removes only pools of this owner.
	Owner string
	// Description of a created pool (default "created by incusexec for
	// <Owner>").
	Description string
}

// EnsurePool returns the storage pool to use as spec says, and whether it
// created it; EnsurePoolChoice also says which driver it picked and why.
func EnsurePool(ctx context.Context, c PoolClient, spec PoolSpec) (name string, created bool, err error) {
	ch, err := EnsurePoolChoice(ctx, c, spec)
	return ch.Name, ch.Created, err
}

// PoolChoice is what EnsurePoolChoice did.
type PoolChoice struct {
	// Name is the pool to use.
	Name string
	// Created reports that the call created it, with Driver.
	Created bool
	Driver  string
	// Why explains the driver of a created pool, in words for the user
	// ("copy-on-write: btrfs on a 6GiB loop file", or why not).
	Why string
}

// EnsurePoolChoice returns the storage pool to use as spec says. An existing
// pool is used as it is, whoever made it and whatever its driver. Bad input
// (no owner, a driver the daemon does not support) is an error wrapping
// ErrInvalid, and nothing is created. With spec.Driver empty, a created pool
// is btrfs on a loop file when the daemon supports btrfs and creating it
// works, dir otherwise.
func EnsurePoolChoice(ctx context.Context, c PoolClient, spec PoolSpec) (PoolChoice, error) {
	if spec.Owner == "" {
		return PoolChoice{}, fmt.Errorf("storage pool: empty owner: %w", executor.ErrInvalid)
	}
	if spec.Fallback == "" {
		spec.Fallback = "incusexec"
	}
	if spec.Description == "" {
		spec.Description = "created by incusexec for " + spec.Owner
	}
	for _, n := range []string{spec.Name, spec.Fallback} {
		if strings.ContainsAny(n, "/ \t\n") || strings.HasPrefix(n, ".") {
			return PoolChoice{}, fmt.Errorf("storage pool name %q: no slash, space or leading dot allowed: %w", n, executor.ErrInvalid)
		}
	}
	c = incusop.Bind(ctx, c)
	names, err := c.GetStoragePoolNames()
	if err != nil {
		return PoolChoice{}, fmt.Errorf("storage pools: %w", err)
	}
	name := spec.Name
	if name == "" {
		switch {
		case slices.Contains(names, "default"):
			return PoolChoice{Name: "default"}, nil
		case len(names) > 0:
			return PoolChoice{Name: names[0]}, nil
		}
		name = spec.Fallback
	}
	if slices.Contains(names, name) {
		return PoolChoice{Name: name}, nil
	}
	srv, _, err := c.GetServer()
	if err != nil {
		return PoolChoice{}, fmt.Errorf("storage pool %s: server info: %w", name, err)
	}
	var drivers []string
	for _, d := range srv.Environment.StorageSupportedDrivers {
		drivers = append(drivers, d.Name)
	}
	if spec.Driver != "" && !slices.Contains(drivers, spec.Driver) {
		return PoolChoice{}, fmt.Errorf("storage pool %s: driver %q not supported by the daemon (it has %s): %w",
			name, spec.Driver, strings.Join(drivers, ", "), executor.ErrInvalid)
	}
	create := func(driver string, cfg map[string]string) error {
		cfg[executor.OwnerKey] = spec.Owner
		err := c.CreateStoragePool(api.StoragePoolsPost{
			Name: name, Driver: driver,
			StoragePoolPut: api.StoragePoolPut{Config: cfg, Description: spec.Description},
		})
		if err != nil {
			return fmt.Errorf("create storage pool %s (driver %s): %w", name, driver, err)
		}
		return nil
	}
	ch := PoolChoice{Name: name, Created: true, Driver: spec.Driver, Why: "driver " + spec.Driver + " asked for"}
	made := false
	if spec.Driver == "" {
		ch.Driver = "dir"
		if !slices.Contains(drivers, "btrfs") {
			ch.Why = "no copy-on-write pool: the daemon does not support btrfs (it has " + strings.Join(drivers, ", ") + "; install btrfs-progs and restart it)"
		} else {
			size := spec.Size
			if size == "" {
				size = defaultLoopSize()
			}
			err := create("btrfs", map[string]string{"size": size})
			switch {
			case err == nil:
				ch.Driver, ch.Why, made = "btrfs", "copy-on-write: btrfs on a "+size+" loop file (a launch snapshots the image instead of copying it)", true
			case ctx.Err() != nil:
				return PoolChoice{}, err
			default:
				ch.Why = fmt.Sprintf("no copy-on-write pool: btrfs on a loop file failed (%v)", err)
			}
		}
	}
	if !made {
		if err := create(ch.Driver, map[string]string{}); err != nil {
			return PoolChoice{}, err
		}
	}
	if spec.Logger != nil {
		spec.Logger.Info("storage pool created", "pool", name, "driver", ch.Driver, "why", ch.Why)
	}
	return ch, nil
}

// defaultLoopSize is a fifth of the free space where the daemon keeps its
// loop files, between 5 and 30 GiB, as `incus admin init` picks it.
func defaultLoopSize() string {
	dir := os.Getenv("INCUS_DIR")
	if dir == "" {
		dir = "/var/lib/incus"
	}
	gib := int64(5)
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err == nil {
		gib = int64(st.Bavail) * st.Bsize / 5 / (1 << 30)
	}
	return strconv.FormatInt(min(max(gib, 5), 30), 10) + "GiB"
}

// RemovePool deletes the storage pool name if owner created it (its config
// executor.OwnerKey is owner) and nothing uses it. A missing pool is no error;
// a pool of another owner is an error wrapping ErrNotAllowed, one in use an
// error wrapping ErrInUse that names its users.
func RemovePool(ctx context.Context, c PoolClient, name, owner string) error {
	if name == "" || owner == "" {
		return fmt.Errorf("remove storage pool %q of owner %q: empty name or owner: %w", name, owner, executor.ErrInvalid)
	}
	c = incusop.Bind(ctx, c)
	p, _, err := c.GetStoragePool(name)
	if api.StatusErrorCheck(err, 404) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("storage pool %s: %w", name, err)
	}
	if got := p.Config[executor.OwnerKey]; got != owner {
		return fmt.Errorf("storage pool %s: owned by %q, not %q: %w", name, got, owner, executor.ErrNotAllowed)
	}
	if len(p.UsedBy) > 0 {
		return fmt.Errorf("storage pool %s: used by %s: %w", name, strings.Join(p.UsedBy, ", "), ErrInUse)
	}
	if err := c.DeleteStoragePool(name); err != nil && !api.StatusErrorCheck(err, 404) {
		return fmt.Errorf("delete storage pool %s: %w", name, err)
	}
	return nil
}
