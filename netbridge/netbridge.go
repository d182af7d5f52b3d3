package netbridge

import (
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"

	"github.com/incusexec/incusexec/executor"
	incus "github.com/lxc/incus/v6/client"
	"github.com/lxc/incus/v6/shared/api"
)

// Errors returned (wrapped, naming the object at fault) by this package.
var (
	// ErrInvalid: a spec field is malformed (a name, a prefix too long for
	// the 15-byte interface limit, a DHCP range outside the subnet, ...).
	ErrInvalid = executor.Sentinel("netbridge: invalid specification", executor.ErrInvalid)
	// ErrSubnetInUse: the requested subnet overlaps a host address or route
	// or another Incus network.
	ErrSubnetInUse = executor.Sentinel("netbridge: subnet in use", executor.ErrAlreadyExists)
	// ErrNoFreeSubnet: no free subnet was left to pick automatically.
	ErrNoFreeSubnet = executor.Sentinel("netbridge: no free subnet", executor.ErrUnavailable)
	// ErrNotOwned: an object of that name exists but does not carry the
	// owner's label (or is not a managed bridge); it is left alone.
	ErrNotOwned = executor.Sentinel("netbridge: exists and is not owned", executor.ErrNotAllowed)
	// ErrPoolNotFound: a profile's root disk names a missing storage pool.
	ErrPoolNotFound = executor.Sentinel("netbridge: storage pool not found", executor.ErrNotFound)
	// ErrNetworkNotFound: a profile's NIC names a missing network.
	ErrNetworkNotFound = executor.Sentinel("netbridge: network not found", executor.ErrNotFound)
	// ErrInUse: Cleanup found owned objects still used by instances or by
	// objects it does not own.
	ErrInUse = executor.Sentinel("netbridge: in use", executor.ErrNotAllowed)
)

// Client is the part of the Incus client this package calls;
// incus.InstanceServer satisfies it. On a cluster the client must also have
// UseTarget(member string) incus.InstanceServer (the real one does).
type Client interface {
	IsClustered() bool
	GetClusterMemberNames() ([]string, error)

	GetNetworks() ([]api.Network, error)
	GetNetwork(name string) (*api.Network, string, error)
	CreateNetwork(api.NetworksPost) error
	UpdateNetwork(name string, network api.NetworkPut, etag string) error
	DeleteNetwork(name string) error

	GetNetworkACLs() ([]api.NetworkACL, error)
	GetNetworkACL(name string) (*api.NetworkACL, string, error)
	CreateNetworkACL(api.NetworkACLsPost) error
	UpdateNetworkACL(name string, acl api.NetworkACLPut, etag string) error
	DeleteNetworkACL(name string) error

	GetProfiles() ([]api.Profile, error)
	GetProfile(name string) (*api.Profile, string, error)
	CreateProfile(api.ProfilesPost) error
	UpdateProfile(name string, profile api.ProfilePut, etag string) error
	DeleteProfile(name string) error

	GetStoragePool(name string) (*api.StoragePool, string, error)
}

// targeter is how a cluster client addresses one member.
type targeter interface {
	UseTarget(name string) incus.InstanceServer
}

// Options configures a Manager.
type Options struct {
	// Logger receives what the Manager creates, corrects and removes;
	// discarded when nil.
	Logger *slog.Logger
	// UsedSubnets lists the IPv4 subnets taken on the daemon's host, which
	// automatic subnets avoid and requested subnets must not overlap. Nil
	// reads this machine's interface addresses and routes
	// (LocalUsedSubnets), right when the daemon runs here; a host talking
	// to a remote daemon supplies that machine's list.
	UsedSubnets func() ([]UsedSubnet, error)
}

// Manager ensures bridges, their isolation ACLs and profiles on one Incus
// daemon or cluster (in the client's project). It is safe for concurrent use,
// and several processes may ensure the same objects at once.
type Manager struct {
	c    Client
	log  *slog.Logger
	used func() ([]UsedSubnet, error)
}

// New returns a Manager working through c.
func New(c Client, opts Options) *Manager {
	m := &Manager{c: c, log: opts.Logger, used: opts.UsedSubnets}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.used == nil {
		m.used = LocalUsedSubnets
	}
	return m
}

// createMu serialises, within this process, picking a subnet and creating
// the network with it, so that two networks ensured at once never pick the
// same subnet.
var createMu sync.Mutex

// Action is what a call did to an object.
type Action string

// The actions reported in a Change.
const (
	Created Action = "created"
	Updated Action = "updated"
	Deleted Action = "deleted"
)

// Kinds of object a Change is about.
const (
	KindNetwork = "network"
	KindProfile = "profile"
	KindACL     = "network-acl"
)

// Change is one thing a call changed on the server.
type Change struct {
	Kind   string // KindNetwork, KindProfile or KindACL
	Name   string
	Action Action
	// Keys lists, sorted, what an update set, corrected or removed:
	// config keys by name, and "description", "devices.<name>", "egress",
	// "ingress".
	Keys []string
}

func (c Change) String() string {
	s := fmt.Sprintf("%s %s %s", c.Action, c.Kind, c.Name)
	if len(c.Keys) > 0 {
		s += " (" + strings.Join(c.Keys, ", ") + ")"
	}
	return s
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func isNotFound(err error) bool { return api.StatusErrorCheck(err, 404) }

func isPreconditionFailed(err error) bool { return api.StatusErrorCheck(err, 412) }
