package incus

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/mount"
	"github.com/lxc/incus/v6/shared/api"
)

// The server-side record of a mount, documented in doc.go; changing any of
// these breaks managers running other versions against the same server.
const (
	// DevicePrefix starts the names of the disk devices this package adds;
	// DeviceName(alias) is DevicePrefix+AliasHash(alias), 48 characters,
	// within Incus's 63.
	DevicePrefix = "incusexec-mount-"
	// ConfigPrefix starts the instance configuration keys that record the
	// holders of each mount: ConfigPrefix+AliasHash(alias).
	ConfigPrefix = "user.incusexec.mount."
)

// DeviceName is the name of the Incus disk device that mounts alias.
func DeviceName(alias string) string { return DevicePrefix + mount.AliasHash(alias) }

// record is the JSON value of a ConfigPrefix key.
type record struct {
	Alias   string            `json:"alias"`
	Holders map[string]string `json:"holders"` // holder ID -> owner
}

// entry is one mount as seen on the server.
type entry struct {
	hash    string
	alias   string
	source  string
	opts    executor.MountOptions
	holders map[string]string
}

func (e *entry) clone() *entry {
	c := *e
	c.holders = maps.Clone(e.holders)
	return &c
}

func (e *entry) mount() mount.Mount {
	m := mount.Mount{Alias: e.alias, Path: mount.DataDir + "/" + e.hash, Source: e.source, Options: e.opts}
	for _, id := range slices.Sorted(maps.Keys(e.holders)) {
		m.Holders = append(m.Holders, mount.Holder{ID: id, Owner: e.holders[id]})
	}
	return m
}

func (e *entry) device() map[string]string {
	d := map[string]string{"type": "disk", "source": e.source, "path": mount.DataDir + "/" + e.hash}
	if e.opts.ReadOnly {
		d["readonly"] = "true"
	}
	if e.opts.Shift {
		d["shift"] = "true"
	}
	if e.opts.Propagation != "" {
		d["propagation"] = e.opts.Propagation
	}
	return d
}

func (e *entry) value() string {
	b, err := json.Marshal(record{Alias: e.alias, Holders: e.holders})
	if err != nil {
		panic(err) // strings only
	}
	return string(b)
}

// parseEntries reads the mounts this package manages from an instance: a
// ConfigPrefix key whose record names an alias hashing to the key, with a
// local disk device of the matching name and path. Anything else, such as a
// record whose device someone removed by hand, is not ours and is reported
// in stale for logging.
func parseEntries(inst *api.Instance) (entries map[string]*entry, stale []string) {
	entries = map[string]*entry{}
	for key, value := range inst.Config {
		hash, ok := strings.CutPrefix(key, ConfigPrefix)
		if !ok {
			continue
		}
		e, err := parseEntry(hash, value, inst.Devices[DevicePrefix+hash])
		if err != nil {
			stale = append(stale, fmt.Sprintf("%s: %v", key, err))
			continue
		}
		entries[hash] = e
	}
	slices.Sort(stale)
	return entries, stale
}

func parseEntry(hash, value string, dev map[string]string) (*entry, error) {
	var r record
	if err := json.Unmarshal([]byte(value), &r); err != nil {
		return nil, fmt.Errorf("unreadable record: %v", err)
	}
	if mount.AliasHash(r.Alias) != hash {
		return nil, fmt.Errorf("record of alias %q does not hash to the key", r.Alias)
	}
	if len(r.Holders) == 0 {
		return nil, fmt.Errorf("record without holders")
	}
	if dev == nil {
		return nil, fmt.Errorf("no device %s%s", DevicePrefix, hash)
	}
	if dev["type"] != "disk" || dev["path"] != mount.DataDir+"/"+hash {
		return nil, fmt.Errorf("device %s%s is not a disk at %s/%s", DevicePrefix, hash, mount.DataDir, hash)
	}
	return &entry{
		hash:   hash,
		alias:  r.Alias,
		source: dev["source"],
		opts: executor.MountOptions{
			ReadOnly:    isTrue(dev["readonly"]),
			Shift:       isTrue(dev["shift"]),
			Propagation: dev["propagation"],
		},
		holders: r.Holders,
	}, nil
}

func isTrue(s string) bool {
	switch strings.ToLower(s) {
	case "true", "1", "yes", "on":
		return true
	}
	return false
}
