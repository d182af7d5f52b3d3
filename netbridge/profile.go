package netbridge

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/incusexec/incusexec/executor"
	"github.com/lxc/incus/v6/shared/api"
)

// ProfileSpec describes an instance profile. Config keys and devices it
// names are owned (drift in them is corrected, the whole device at once);
// everything else on the profile is left alone.
type ProfileSpec struct {
	// Name is the profile's name: 1-63 ASCII letters, digits, '-', '_'
	// and '.', starting with a letter.
	Name string
	// Owner goes into the user.incusexec.owner label (required).
	Owner string
	// Description defaults to "incusexec profile of <owner>".
	Description string

	// Network, when set, adds a NIC device NICDevice (default "eth0") on
	// that bridge, named NICName (default NICDevice) inside the instance.
	Network   string
	NICDevice string
	NICName   string
	// Pool, when set, adds the root disk device "root" on that storage
	// pool, of RootSize when set.
	Pool     string
	RootSize string

	// CPU, Memory and Processes set limits.cpu, limits.memory and
	// limits.processes when non-zero.
	CPU       string
	Memory    string
	Processes int

	// Config holds further keys: raw.lxc, security.*, VM keys such as
	// security.secureboot. Keys of the volatile.* and user.incusexec.*
	// namespaces are refused.
	Config map[string]string
	// Devices holds further devices, each owned as a whole.
	Devices map[string]map[string]string
}

// DebusineProfile is the profile Debusine workers use: sysfs mounted
// read-write for systemd in containers (raw.lxc lxc.mount.auto=sys), the
// NIC eth0 named host0 inside (as systemd-nspawn names it, which Debusine
// images' networkd configuration expects) on network, the root disk on
// pool, and Secure Boot off for VMs running unsigned kernels.
func DebusineProfile(owner, network, pool string) ProfileSpec {
	return ProfileSpec{
		Name:        "debusine",
		Owner:       owner,
		Description: "Debusine task instances (incusexec)",
		Network:     network,
		NICDevice:   "eth0",
		NICName:     "host0",
		Pool:        pool,
		Config: map[string]string{
			"raw.lxc":             "lxc.mount.auto=sys",
			"security.secureboot": "false",
		},
	}
}

// Profile is an ensured profile.
type Profile struct {
	Name  string
	Owner string
	// Changes lists what the call changed, empty when everything already
	// was as specified.
	Changes []Change
}

type profilePlan struct {
	name, owner, desc string
	config            map[string]string
	devices           map[string]map[string]string
	pool, network     string
}

func (s ProfileSpec) plan() (*profilePlan, error) {
	if err := validateProfileName(s.Name); err != nil {
		return nil, err
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: profile %s: "+format, append([]any{ErrInvalid, s.Name}, args...)...)
	}
	if err := validateOwner(s.Owner); err != nil {
		return nil, fmt.Errorf("profile %s: %w", s.Name, err)
	}
	p := &profilePlan{name: s.Name, owner: s.Owner, desc: s.Description, pool: s.Pool, network: s.Network,
		config: map[string]string{executor.OwnerKey: s.Owner}, devices: map[string]map[string]string{}}
	if p.desc == "" {
		p.desc = "incusexec profile of " + s.Owner
	}
	for k, v := range s.Config {
		switch {
		case k == "" || strings.ContainsAny(k, " \t\n="):
			return nil, bad("config key %q is malformed", k)
		case strings.HasPrefix(k, "volatile.") || strings.HasPrefix(k, "user.incusexec."):
			return nil, bad("config key %s is reserved", k)
		}
		p.config[k] = v
	}
	if s.CPU != "" {
		p.config["limits.cpu"] = s.CPU
	}
	if s.Memory != "" {
		p.config["limits.memory"] = s.Memory
	}
	if s.Processes < 0 {
		return nil, bad("Processes %d is negative", s.Processes)
	}
	if s.Processes > 0 {
		p.config["limits.processes"] = strconv.Itoa(s.Processes)
	}
	for name, dev := range s.Devices {
		if err := validateDeviceName(name); err != nil {
			return nil, fmt.Errorf("profile %s: %w", s.Name, err)
		}
		if dev["type"] == "" {
			return nil, bad("device %s has no type", name)
		}
		p.devices[name] = maps.Clone(dev)
	}
	if s.Network != "" {
		if err := ValidateNetworkName(s.Network); err != nil {
			return nil, fmt.Errorf("profile %s: %w", s.Name, err)
		}
		dev := s.NICDevice
		if dev == "" {
			dev = "eth0"
		}
		if err := validateDeviceName(dev); err != nil {
			return nil, fmt.Errorf("profile %s: NIC %w", s.Name, err)
		}
		ifname := s.NICName
		if ifname == "" {
			ifname = dev
		}
		if err := validateInterfaceName(ifname); err != nil {
			return nil, fmt.Errorf("profile %s: NIC %w", s.Name, err)
		}
		if _, dup := p.devices[dev]; dup {
			return nil, bad("device %s is both the NIC and in Devices", dev)
		}
		p.devices[dev] = map[string]string{"type": "nic", "network": s.Network, "name": ifname}
	} else if s.NICDevice != "" || s.NICName != "" {
		return nil, bad("NIC device or name given without a network")
	}
	if s.Pool != "" {
		if err := checkToken("storage pool name", s.Pool, 63); err != nil {
			return nil, fmt.Errorf("profile %s: %w", s.Name, err)
		}
		if _, dup := p.devices["root"]; dup {
			return nil, bad("device root is both the root disk and in Devices")
		}
		root := map[string]string{"type": "disk", "path": "/", "pool": s.Pool}
		if s.RootSize != "" {
			root["size"] = s.RootSize
		}
		p.devices["root"] = root
	} else if s.RootSize != "" {
		return nil, bad("RootSize given without a pool")
	}
	return p, nil
}

// EnsureProfile makes the profile exist as spec says: created when missing,
// owned keys and devices corrected when they drifted, everything else left
// alone; the Changes report what it did. The pool and network it refers to
// must exist (ErrPoolNotFound, ErrNetworkNotFound), checked before anything
// is created; a profile of that name without the owner's label is
// ErrNotOwned.
func (m *Manager) EnsureProfile(ctx context.Context, spec ProfileSpec) (*Profile, error) {
	p, err := spec.plan()
	if err != nil {
		return nil, err
	}
	if p.pool != "" {
		if _, _, err := m.c.GetStoragePool(p.pool); isNotFound(err) {
			return nil, fmt.Errorf("%w: profile %s: root disk pool %q does not exist", ErrPoolNotFound, p.name, p.pool)
		} else if err != nil {
			return nil, fmt.Errorf("profile %s: look up storage pool %s: %w", p.name, p.pool, err)
		}
	}
	if p.network != "" {
		if _, _, err := m.c.GetNetwork(p.network); isNotFound(err) {
			return nil, fmt.Errorf("%w: profile %s: NIC network %q does not exist", ErrNetworkNotFound, p.name, p.network)
		} else if err != nil {
			return nil, fmt.Errorf("profile %s: look up network %s: %w", p.name, p.network, err)
		}
	}
	for attempt := 0; attempt < 10; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("ensure profile %s: %w", p.name, err)
		}
		cur, etag, err := m.c.GetProfile(p.name)
		if isNotFound(err) {
			err = m.c.CreateProfile(api.ProfilesPost{Name: p.name, ProfilePut: api.ProfilePut{
				Config: p.config, Description: p.desc, Devices: p.devices}})
			if err != nil {
				if _, _, gerr := m.c.GetProfile(p.name); gerr == nil {
					m.log.Debug("profile created concurrently by another writer", "profile", p.name, "err", err)
					continue
				}
				return nil, fmt.Errorf("create profile %s: %w", p.name, err)
			}
			m.log.Info("profile created", "profile", p.name, "owner", p.owner)
			keys := sortedKeys(p.config)
			for _, d := range sortedKeys(p.devices) {
				keys = append(keys, "devices."+d)
			}
			return &Profile{Name: p.name, Owner: p.owner, Changes: []Change{{Kind: KindProfile, Name: p.name, Action: Created, Keys: keys}}}, nil
		}
		if err != nil {
			return nil, fmt.Errorf("ensure profile %s: %w", p.name, err)
		}
		if o := cur.Config[executor.OwnerKey]; o != p.owner {
			if o == "" {
				return nil, fmt.Errorf("%w: profile %s has no %s label (it was not created by incusexec)", ErrNotOwned, p.name, executor.OwnerKey)
			}
			return nil, fmt.Errorf("%w: profile %s belongs to %q, not %q", ErrNotOwned, p.name, o, p.owner)
		}
		put := cur.Writable()
		put.Config = maps.Clone(put.Config)
		if put.Config == nil {
			put.Config = map[string]string{}
		}
		put.Devices = maps.Clone(put.Devices)
		if put.Devices == nil {
			put.Devices = map[string]map[string]string{}
		}
		var keys []string
		for _, k := range sortedKeys(p.config) {
			if v, ok := put.Config[k]; !ok || v != p.config[k] {
				put.Config[k] = p.config[k]
				keys = append(keys, k)
			}
		}
		for _, d := range sortedKeys(p.devices) {
			if !maps.Equal(put.Devices[d], p.devices[d]) {
				put.Devices[d] = p.devices[d]
				keys = append(keys, "devices."+d)
			}
		}
		if put.Description != p.desc {
			put.Description = p.desc
			keys = append(keys, "description")
		}
		if len(keys) == 0 {
			return &Profile{Name: p.name, Owner: p.owner}, nil
		}
		slices.Sort(keys)
		err = m.c.UpdateProfile(p.name, put, etag)
		if isPreconditionFailed(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("correct profile %s (%s): %w", p.name, strings.Join(keys, ", "), err)
		}
		m.log.Info("profile corrected", "profile", p.name, "keys", keys)
		return &Profile{Name: p.name, Owner: p.owner, Changes: []Change{{Kind: KindProfile, Name: p.name, Action: Updated, Keys: keys}}}, nil
	}
	return nil, fmt.Errorf("ensure profile %s: still racing with other writers", p.name)
}
