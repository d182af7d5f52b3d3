package incus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/imagebuild"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/internal/incusop"
	mountincus "github.com/incusexec/incusexec/mount/incus"
	"github.com/incusexec/incusexec/netbridge"
	incusclient "github.com/lxc/incus/v6/client"
	"github.com/lxc/incus/v6/shared/api"
)

// Backend is the Incus backend: one connection to a daemon (or cluster)
// and the parts built on it, shared by the executors of any number of
// images. It is safe for concurrent use.
type Backend struct {
	cfg    Config
	log    *slog.Logger
	client incusclient.InstanceServer

	instances *instance.Manager
	mounts    *mountincus.Manager
	images    *imagebuild.Importer
	networks  *netbridge.Manager

	network *netbridge.Network
	profile *netbridge.Profile
}

// NewBackend connects to the daemon cfg names, makes sure of the bridge and
// profile it specifies, and returns the backend. A daemon that cannot be
// reached is an error wrapping ErrUnavailable.
func NewBackend(ctx context.Context, cfg Config) (*Backend, error) {
	if cfg.Owner == "" {
		return nil, fmt.Errorf("executor config: %w: Owner is required", executor.ErrInvalid)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c, err := cfg.connect(ctx, log)
	if err != nil {
		return nil, err
	}
	b := &Backend{cfg: cfg, log: log, client: c}
	if b.cfg.Profiles == nil {
		b.cfg.Profiles = []string{"default"}
	}
	icfg := instance.Config{Owner: cfg.Owner, Prefix: cfg.Prefix, StopGrace: cfg.StopGrace, Logger: log}
	if b.instances, err = instance.New(c, icfg); err != nil {
		return nil, err
	}
	if b.mounts, err = mountincus.New(mountincus.Config{Client: c, AllowedRoots: cfg.AllowedRoots, Owner: cfg.Owner, Logger: log}); err != nil {
		b.Close()
		return nil, err
	}
	b.images = &imagebuild.Importer{Client: c, Logger: log}
	b.networks = netbridge.New(c, netbridge.Options{Logger: log})
	if err := b.ensureNetwork(ctx); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

func (b *Backend) ensureNetwork(ctx context.Context) error {
	if spec := b.cfg.Network; spec != nil {
		s := *spec
		if s.Owner == "" {
			s.Owner = b.cfg.Owner
		}
		n, err := b.networks.Ensure(ctx, s)
		if err != nil {
			return err
		}
		b.network = n
		for _, c := range n.Changes {
			b.log.Info("network", "change", c.String())
		}
	}
	if spec := b.cfg.Profile; spec != nil {
		s := *spec
		if s.Owner == "" {
			s.Owner = b.cfg.Owner
		}
		if s.Network == "" && b.network != nil {
			s.Network = b.network.Name
		}
		p, err := b.networks.EnsureProfile(ctx, s)
		if err != nil {
			return err
		}
		b.profile = p
		for _, c := range p.Changes {
			b.log.Info("profile", "change", c.String())
		}
	}
	return nil
}

// Close releases the backend's event listeners. Instances, images, mounts
// and the bridge stay.
func (b *Backend) Close() error {
	if b.instances == nil {
		return nil
	}
	return b.instances.Close()
}

// Client returns the backend's connection, for what the interfaces do not
// cover.
func (b *Backend) Client() incusclient.InstanceServer { return b.client }

// Network returns the ensured bridge (nil without Config.Network).
func (b *Backend) Network() *netbridge.Network { return b.network }

// Profile returns the ensured profile (nil without Config.Profile).
func (b *Backend) Profile() *netbridge.Profile { return b.profile }

// Profiles returns the profiles every instance gets, in order.
func (b *Backend) Profiles() []string {
	ps := slices.Clone(b.cfg.Profiles)
	if b.profile != nil && !slices.Contains(ps, b.profile.Name) {
		ps = append(ps, b.profile.Name)
	}
	return ps
}

// GC deletes the owner's instances created more than olderThan ago (all
// when zero), except those keep returns true for (keep may be nil), and
// returns the names deleted; it keeps going past failures and returns them
// all.
func (b *Backend) GC(ctx context.Context, olderThan time.Duration, keep func(name string) bool) ([]string, error) {
	names, err := b.instances.GC(ctx, instance.GCOptions{OlderThan: olderThan, Keep: keep})
	return names, err
}

// Cleanup removes the owner's bridge, profile and ACLs when nothing uses
// them any more (netbridge.Manager.Cleanup).
func (b *Backend) Cleanup(ctx context.Context) ([]netbridge.Change, error) {
	ch, err := b.networks.Cleanup(ctx, b.cfg.Owner)
	return ch, err
}

// Executor returns the executor bound to img.
func (b *Backend) Executor(img Image) (*Executor, error) {
	alias, err := img.alias()
	if err != nil {
		return nil, err
	}
	return &Executor{b: b, img: img, alias: alias}, nil
}

// Executor is the Executor of the Incus backend for one image.
type Executor struct {
	b     *Backend
	img   Image
	alias string
}

var _ executor.Executor = (*Executor)(nil)

// Image returns the image alias.
func (e *Executor) Image() string { return e.alias }

// Backend returns the backend the executor belongs to.
func (e *Executor) Backend() *Backend { return e.b }

// Available checks that the daemon answers and has the driver the image
// needs (lxc for containers, qemu for VMs).
func (e *Executor) Available(ctx context.Context) error {
	srv, _, err := incusop.Bind(ctx, e.b.client).GetServer()
	if err != nil {
		return fmt.Errorf("%w: incus daemon: %v", executor.ErrUnavailable, err)
	}
	driver, kind := "lxc", "containers"
	if e.img.VM {
		driver, kind = "qemu", "virtual machines"
	}
	for _, d := range strings.Split(srv.Environment.Driver, "|") {
		if strings.TrimSpace(d) == driver {
			return nil
		}
	}
	return fmt.Errorf("%w: incus daemon cannot run %s: drivers %q lack %s", executor.ErrUnavailable, kind, srv.Environment.Driver, driver)
}

// EnsureImage checks that the image exists and imports it when it does
// not and the executor has its tarball.
func (e *Executor) EnsureImage(ctx context.Context) error {
	_, _, err := incusop.Bind(ctx, e.b.client).GetImageAlias(e.alias)
	switch {
	case err == nil:
		return nil
	case !api.StatusErrorCheck(err, 404):
		return fmt.Errorf("image %s: %w", e.alias, err)
	case e.img.ID == "":
		return fmt.Errorf("image %s: %w (and the executor has no tarball to import)", e.alias, executor.ErrNotFound)
	}
	src := imagebuild.Source{ID: e.img.ID, Path: e.img.Tarball, SHA256: e.img.SHA256, Metadata: e.img.Metadata}
	if src.Path == "" {
		rc, err := e.img.Open(ctx)
		if err != nil {
			return fmt.Errorf("image %s: open the tarball: %w", e.alias, err)
		}
		defer rc.Close()
		src.Reader = rc
	}
	opts := e.img.Import
	opts.Owner = e.b.cfg.Owner
	opts.Type = imagebuild.Container
	if e.img.VM {
		opts.Type = imagebuild.VirtualMachine
	}
	img, err := e.b.images.Import(ctx, src, opts)
	if err != nil {
		return err
	}
	e.b.log.Info("image imported", "alias", img.Alias, "fingerprint", img.Fingerprint, "reused", img.Reused)
	return nil
}

// RemoveImage deletes the image and its alias; nil when they are gone. An
// image still used by instances loses its alias and stays.
func (e *Executor) RemoveImage(ctx context.Context) error {
	err := e.b.images.Delete(ctx, e.alias)
	if errors.Is(err, imagebuild.ErrNotFound) {
		return nil
	}
	return err
}

// Create creates a stopped instance from the image, with the backend's
// profiles then spec's.
func (e *Executor) Create(ctx context.Context, spec executor.Spec) (executor.Instance, error) {
	if spec.Name != "" {
		if err := executor.CheckName(spec.Name); err != nil {
			return nil, err
		}
	}
	in, err := e.b.instances.Create(ctx, instance.Spec{
		Name:      spec.Name,
		ID:        spec.ID,
		Image:     e.alias,
		VM:        e.img.VM,
		Profiles:  append(e.b.Profiles(), spec.Profiles...),
		Config:    spec.Config,
		Devices:   spec.Devices,
		Ephemeral: spec.Ephemeral,
		Target:    e.b.cfg.Target,
		NoStart:   true,
	})
	if err != nil {
		return nil, err
	}
	return &Instance{e: e, in: in, ephemeral: spec.Ephemeral}, nil
}

// Statistics returns inst.Stats.
func (e *Executor) Statistics(ctx context.Context, inst executor.Instance) (executor.Stats, error) {
	return inst.Stats(ctx)
}

// List returns the names of the owner's instances (Backend.List).
func (e *Executor) List(ctx context.Context) ([]string, error) { return e.b.List(ctx) }

// AutopkgtestArgs returns [alias, "--", "--profile", P] ("--vm" first for
// a VM), P being the ensured profile or else the last of Config.Profiles.
func (e *Executor) AutopkgtestArgs() []string {
	profile := "default"
	if ps := e.b.Profiles(); len(ps) > 0 {
		profile = ps[len(ps)-1]
	}
	args := []string{e.alias, "--", "--profile", profile}
	if e.img.VM {
		args = append([]string{"--vm"}, args...)
	}
	return args
}

// Instance returns a handle on the existing instance name (one this
// executor or an earlier process created), or an error wrapping
// executor.ErrNotFound.
func (e *Executor) Instance(ctx context.Context, name string) (*Instance, error) {
	in, err := e.b.instances.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	return &Instance{e: e, in: in}, nil
}

// Instance returns a handle on the existing instance name, whatever image
// it was made from (Backend.Executor is not needed to reach it), or an
// error wrapping executor.ErrNotFound.
func (b *Backend) Instance(ctx context.Context, name string) (*Instance, error) {
	in, err := b.instances.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	return &Instance{e: &Executor{b: b}, in: in}, nil
}

// List returns the names of the owner's instances, whatever their image.
func (b *Backend) List(ctx context.Context) ([]string, error) { return b.instances.List(ctx) }
