package main

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/incusexec/incusexec/executor/incus"

	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/netbridge"
	"gopkg.in/yaml.v2"
)

// fileConfig is the --config file: an ISM-style executor configuration.
// The document is either this mapping itself or, as in an ISM
// configuration, nested under executors.incus.
type fileConfig struct {
	Socket     string `yaml:"socket"`
	Remote     string `yaml:"remote"`
	ClientCert string `yaml:"client_cert"`
	ClientKey  string `yaml:"client_key"`
	ServerCert string `yaml:"server_cert"`
	Project    string `yaml:"project"`
	Target     string `yaml:"target"`

	Owner    string   `yaml:"owner"`
	Prefix   string   `yaml:"prefix"`
	Profiles []string `yaml:"profiles"`

	Network *networkConfig `yaml:"network"`
	Profile *profileConfig `yaml:"profile"`

	Ready        string   `yaml:"ready"`
	NICName      string   `yaml:"nic_name"`
	StopGrace    string   `yaml:"stop_grace"`
	AllowedRoots []string `yaml:"allowed_roots"`
}

type networkConfig struct {
	Name      string `yaml:"name"`
	Prefix    string `yaml:"prefix"`
	IPv4      string `yaml:"ipv4"`
	NAT       bool   `yaml:"nat"`
	IPv6      bool   `yaml:"ipv6"`
	MTU       int    `yaml:"mtu"`
	Isolation string `yaml:"isolation"`
}

type profileConfig struct {
	Name      string            `yaml:"name"`
	Pool      string            `yaml:"pool"`
	NICName   string            `yaml:"nic_name"`
	RootSize  string            `yaml:"root_size"`
	CPU       string            `yaml:"cpu"`
	Memory    string            `yaml:"memory"`
	Processes int               `yaml:"processes"`
	Config    map[string]string `yaml:"config"`
	// Debusine starts from netbridge.DebusineProfile (raw.lxc
	// lxc.mount.auto=sys, NIC host0).
	Debusine bool `yaml:"debusine"`
}

// loadConfig reads path; unknown keys are errors naming the file.
func loadConfig(path string) (*fileConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var wrapper struct {
		Executors map[string]yaml.MapSlice `yaml:"executors"`
	}
	doc := b
	if yaml.Unmarshal(b, &wrapper) == nil && wrapper.Executors != nil {
		inc, ok := wrapper.Executors["incus"]
		if !ok {
			return nil, fmt.Errorf("config %s: executors has no incus section", path)
		}
		if doc, err = yaml.Marshal(inc); err != nil {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
	}
	var c fileConfig
	if err := yaml.UnmarshalStrict(doc, &c); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return &c, nil
}

// globals are the flags every command accepts.
type globals struct {
	config  string
	socket  string
	remote  string
	project string
	target  string
	owner   string
	json    bool
	verbose bool
}

// executorConfig merges the config file and the flags (flags win) into
// the library's configuration. Network and profile specs come from the
// file only; setup and demo add their own.
func (a *app) executorConfig() (incus.Config, *fileConfig, error) {
	fc := &fileConfig{}
	if a.g.config != "" {
		var err error
		if fc, err = loadConfig(a.g.config); err != nil {
			return incus.Config{}, nil, err
		}
	}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&fc.Socket, a.g.socket)
	set(&fc.Remote, a.g.remote)
	set(&fc.Project, a.g.project)
	set(&fc.Target, a.g.target)
	set(&fc.Owner, a.g.owner)
	if fc.Owner == "" {
		fc.Owner = defaultOwner
	}
	cfg := incus.Config{
		Socket: fc.Socket, Remote: fc.Remote,
		ClientCert: fc.ClientCert, ClientKey: fc.ClientKey, ServerCert: fc.ServerCert,
		Project: fc.Project, Target: fc.Target,
		Owner: fc.Owner, Prefix: fc.Prefix, Profiles: fc.Profiles,
		AllowedRoots: fc.AllowedRoots,
		Logger:       a.log,
	}
	if len(cfg.AllowedRoots) == 0 {
		cfg.AllowedRoots = a.extraRoots
	}
	if fc.StopGrace != "" {
		d, err := time.ParseDuration(fc.StopGrace)
		if err != nil {
			return cfg, nil, fmt.Errorf("config: stop_grace: %w", err)
		}
		cfg.StopGrace = d
	}
	if fc.Network != nil {
		spec, err := fc.Network.spec(fc.Prefix)
		if err != nil {
			return cfg, nil, err
		}
		cfg.Network = &spec
	}
	if fc.Profile != nil {
		spec := fc.Profile.spec(cfg.Owner)
		cfg.Profile = &spec
	}
	nic := fc.NICName
	if nic == "" && fc.Profile != nil {
		nic = fc.Profile.NICName
		if nic == "" && fc.Profile.Debusine {
			nic = "host0"
		}
	}
	r, err := parseReady(fc.Ready, nic)
	if err != nil {
		return cfg, nil, fmt.Errorf("config: %w", err)
	}
	cfg.Ready = r
	return cfg, fc, nil
}

func (n *networkConfig) spec(prefix string) (netbridge.NetworkSpec, error) {
	s := netbridge.NetworkSpec{Name: n.Name, Prefix: n.Prefix, NAT: n.NAT, IPv6: n.IPv6, MTU: n.MTU}
	if s.Name == "" && s.Prefix == "" {
		s.Prefix = strings.TrimRight(prefix, "-")
	}
	if n.IPv4 != "" {
		p, err := netip.ParsePrefix(n.IPv4)
		if err != nil {
			return s, fmt.Errorf("config: network.ipv4: %w", err)
		}
		s.IPv4 = p
	}
	switch n.Isolation {
	case "", "none":
	case "strict":
		s.Isolation = netbridge.IsolationStrict
	case "egress":
		s.Isolation = netbridge.IsolationEgress
	default:
		return s, fmt.Errorf("config: network.isolation %q: want none, strict or egress", n.Isolation)
	}
	return s, nil
}

func (p *profileConfig) spec(owner string) netbridge.ProfileSpec {
	var s netbridge.ProfileSpec
	if p.Debusine {
		s = netbridge.DebusineProfile(owner, "", p.Pool)
	}
	if p.Name != "" {
		s.Name = p.Name
	}
	s.Owner = owner
	if p.Pool != "" {
		s.Pool = p.Pool
	}
	if p.NICName != "" {
		s.NICName = p.NICName
	}
	s.RootSize, s.CPU, s.Memory, s.Processes = p.RootSize, p.CPU, p.Memory, p.Processes
	if len(p.Config) > 0 {
		if s.Config == nil {
			s.Config = map[string]string{}
		}
		for k, v := range p.Config {
			s.Config[k] = v
		}
	}
	return s
}

// parseReady turns --ready into what Start waits for.
func parseReady(s, nic string) (instance.Ready, error) {
	if nic == "" {
		nic = "eth0"
	}
	switch s {
	case "", "none":
		return instance.Ready{}, nil
	case "systemd":
		return instance.Ready{Systemd: true, Timeout: 3 * time.Minute}, nil
	case "network":
		return instance.Ready{NIC: nic, Family: "inet", Timeout: 2 * time.Minute}, nil
	}
	return instance.Ready{}, fmt.Errorf("ready %q: want systemd, network or none", s)
}

// exampleConfig is what `incusexec help config` prints.
var exampleConfig = bytes.TrimLeft([]byte(`
# incusexec --config FILE: the Incus executor section of an ISM-style
# configuration. The same keys may sit under executors: incus:.
socket: /var/lib/incus/unix.socket   # or remote: https://host:8443 with
# client_cert: /etc/ism/client.crt    # client_key and, to pin the server,
# client_key: /etc/ism/client.key     # server_cert
project: default
target: ""                           # cluster member, "" lets Incus choose
owner: ism                           # labels everything created; GC/cleanup scope
prefix: ism-                         # instance names; the bridge is <prefix>br
profiles: [default]                  # applied first to every instance
network:                             # ensured bridge (NAT off unless nat: true)
  prefix: ism
  ipv4: ""                           # e.g. 10.42.0.1/24; empty picks a free /24
  nat: false
  isolation: none                    # none, strict or egress
profile:                             # ensured profile, given to every instance
  name: ism
  pool: default
  nic_name: eth0                     # host0 for Debian/systemd-networkd images
ready: network                       # systemd, network or none
stop_grace: 30s
allowed_roots: [/srv/ism/shared]     # host directories mounts may come from
`), "\n")
