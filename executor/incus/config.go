package incus

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/imagebuild"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/internal/incusop"
	"github.com/incusexec/incusexec/netbridge"
	incusclient "github.com/lxc/incus/v6/client"
)

// Config configures the Incus backend: how to reach the daemon, and what
// its instances share (owner, bridge, profile, readiness, mount allowlist).
type Config struct {
	// Socket is the daemon's unix socket, used when Remote is empty; empty
	// means Incus's default ($INCUS_SOCKET, $INCUS_DIR/unix.socket,
	// /var/lib/incus/unix.socket).
	Socket string
	// Remote is the URL of a daemon reached over HTTPS
	// (https://host:8443), authenticated with the client certificate.
	Remote string
	// ClientCert and ClientKey are PEM files of the client certificate for
	// Remote; ServerCert, when set, is the PEM file of the certificate the
	// server must present (otherwise the system's roots verify it).
	ClientCert, ClientKey, ServerCert string
	// Reconnect is how long a request waits for a daemon that refuses
	// connections (a restart) before it fails (DefaultReconnect when zero;
	// negative: no waiting).
	Reconnect time.Duration
	// Client, when set, is used instead of connecting (a test daemon's
	// client, or one the host set up itself); Socket and Remote are then
	// ignored and reconnection is the host's business.
	Client incusclient.InstanceServer

	// Project and Target are the Incus project and the cluster member
	// instances go to ("" for the defaults).
	Project, Target string

	// Owner labels everything the backend creates (required): instances,
	// images, the bridge, the profile and mounts; GC and Cleanup touch
	// only what carries it.
	Owner string
	// Prefix starts generated instance names (instance.DefaultPrefix when
	// empty).
	Prefix string

	// Network, when set, is the bridge made sure of at connection
	// (netbridge.Manager.Ensure); its Owner defaults to Owner.
	Network *netbridge.NetworkSpec
	// Profile, when set, is the profile made sure of at connection and
	// given to every instance after Profiles, and the profile in
	// AutopkgtestArgs. Its Owner defaults to Owner, its Network to the
	// ensured bridge.
	Profile *netbridge.ProfileSpec
	// Profiles are applied to every instance first; nil means
	// ["default"], an empty slice none (the ensured Profile alone).
	Profiles []string

	// StopGrace is how long Stop waits for a graceful shutdown
	// (instance.DefaultStopGrace when zero).
	StopGrace time.Duration
	// Ready is what Start and Restart wait for: systemd up, an address on
	// a NIC, the VM agent, or a probe of the host's (see instance.Ready).
	Ready instance.Ready

	// AllowedRoots are the host directories that Mount sources must lie
	// under; none refuses every mount.
	AllowedRoots []string

	// Logger receives what the backend does; discarded when nil.
	Logger *slog.Logger
}

// Image is what an executor is bound to: an existing image alias, or an
// artifact that EnsureImage imports (imagebuild) as artifact/<ID>.
type Image struct {
	// ID is the artifact's ID; the image's alias is artifact/<ID>. Set it
	// with Tarball or Open.
	ID string
	// Tarball is the path of the system tarball (.tar, .tar.gz, .tar.xz,
	// .tar.zst) or, for a VM, of the qcow2 disk.
	Tarball string
	// Open, instead of Tarball, provides the tarball's stream when an
	// import is needed (a download, say); it is not called when the
	// image exists already.
	Open func(ctx context.Context) (io.ReadCloser, error)
	// SHA256 is the stream's hex SHA-256 when known: an existing image of
	// other content is then a conflict instead of being reused.
	SHA256 string
	// Metadata describes the imported image (architecture, OS, release).
	Metadata imagebuild.Metadata
	// Import tunes the import (Mode, Compression, Replace, Progress); its
	// Type and Owner are set from VM and Config.Owner.
	Import imagebuild.Options

	// Alias, when ID is empty, is an image that exists already (imported
	// by other means); EnsureImage then only checks that it is there.
	Alias string

	// VM makes the instances virtual machines.
	VM bool
}

// alias returns the image's alias.
func (img Image) alias() (string, error) {
	if img.ID == "" {
		if img.Alias == "" {
			return "", fmt.Errorf("image: %w: neither ID nor Alias set", executor.ErrInvalid)
		}
		return img.Alias, nil
	}
	if img.Tarball == "" && img.Open == nil {
		return "", fmt.Errorf("image %s: %w: neither Tarball nor Open set", img.ID, executor.ErrInvalid)
	}
	a, err := imagebuild.Alias(img.ID)
	return a, err
}

// Connect returns a connection to the daemon cfg names, in cfg.Project,
// made the way NewBackend makes its own (reconnecting, shared by
// goroutines), without the rest of a backend: for a host that needs only
// the client (an image import, a lookup). Only the connection fields of cfg
// (Socket, Remote, the certificates, Reconnect, Client, Project) and its
// Logger count. A daemon that cannot be reached is an error wrapping
// executor.ErrUnavailable.
func Connect(ctx context.Context, cfg Config) (incusclient.InstanceServer, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return cfg.connect(ctx, log)
}

// connect returns cfg's client, in its project.
func (cfg *Config) connect(ctx context.Context, log *slog.Logger) (incusclient.InstanceServer, error) {
	if cfg.Client != nil {
		c := cfg.Client
		if cfg.Project != "" {
			c = c.UseProject(cfg.Project)
		}
		return incusop.Shared(c), nil
	}
	var (
		c   incusclient.InstanceServer
		err error
	)
	if cfg.Remote != "" {
		args := &incusclient.ConnectionArgs{UserAgent: "incusexec"}
		read := func(path, what string) (string, error) {
			if path == "" {
				return "", nil
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return "", fmt.Errorf("%w: %s: %v", executor.ErrUnavailable, what, err)
			}
			return string(b), nil
		}
		if args.TLSClientCert, err = read(cfg.ClientCert, "client certificate"); err != nil {
			return nil, err
		}
		if args.TLSClientKey, err = read(cfg.ClientKey, "client key"); err != nil {
			return nil, err
		}
		if args.TLSServerCert, err = read(cfg.ServerCert, "server certificate"); err != nil {
			return nil, err
		}
		c, err = incusclient.ConnectIncusWithContext(ctx, cfg.Remote, args)
		if err != nil {
			return nil, fmt.Errorf("%w: connect to %s: %v", executor.ErrUnavailable, cfg.Remote, err)
		}
	} else {
		c, err = incusclient.ConnectIncusUnixWithContext(ctx, cfg.Socket, &incusclient.ConnectionArgs{UserAgent: "incusexec"})
		if err != nil {
			where := cfg.Socket
			if where == "" {
				where = "the default socket"
			}
			return nil, fmt.Errorf("%w: connect to %s: %v", executor.ErrUnavailable, where, err)
		}
	}
	// The client keeps the context it was connected with for every later
	// request: ctx bounds the connection only, not the backend's life.
	if wc, ok := c.(interface {
		WithContext(context.Context) incusclient.InstanceServer
	}); ok {
		c = wc.WithContext(context.Background())
	}
	limit := cfg.Reconnect
	if limit == 0 {
		limit = DefaultReconnect
	}
	if limit > 0 {
		reconnecting(c, limit, log)
	}
	if cfg.Project != "" {
		c = c.UseProject(cfg.Project)
	}
	return incusop.Shared(c), nil
}
