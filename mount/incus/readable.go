package incus

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"github.com/incusexec/incusexec/mount"
	"github.com/lxc/incus/v6/shared/api"
	"golang.org/x/sys/unix"
)

// sourceInfo is what the readability check needs to know of a source
// directory, read on this host when it is acquired.
type sourceInfo struct {
	known    bool
	uid, gid uint32
	perm     fs.FileMode
	acl      bool // a POSIX access ACL may grant more than the mode says
}

func statSource(path string) sourceInfo {
	fi, err := os.Stat(path)
	if err != nil {
		return sourceInfo{}
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return sourceInfo{}
	}
	_, aclErr := unix.Getxattr(path, "system.posix_acl_access", nil)
	return sourceInfo{known: true, uid: st.Uid, gid: st.Gid, perm: fi.Mode().Perm(), acl: aclErr == nil}
}

// idmapEntry is one range of an instance's id map as Incus records it in
// volatile.idmap.current (after a start) or volatile.idmap.next.
type idmapEntry struct {
	Isuid, Isgid     bool
	Hostid, Maprange int64
}

// hostIDMapped reports whether host id falls in a range of m for uids
// (uid true) or gids.
func hostIDMapped(m []idmapEntry, id uint32, uid bool) bool {
	for _, e := range m {
		if (uid && e.Isuid || !uid && e.Isgid) && int64(id) >= e.Hostid && int64(id) < e.Hostid+e.Maprange {
			return true
		}
	}
	return false
}

// checkReadable refuses to attach a source that nobody inside inst could
// read: in an unprivileged container, without Shift, a directory whose owner
// and group lie outside the container's id map appears as nobody's, root
// inside has no privilege over it, and only its "other" bits apply.
func checkReadable(inst *api.Instance, c *change) error {
	src := c.src
	if c.opts.Shift || !src.known || src.acl || inst.Type == string(api.InstanceTypeVM) || isTrue(inst.ExpandedConfig["security.privileged"]) {
		return nil
	}
	raw := inst.Config["volatile.idmap.current"]
	if raw == "" {
		raw = inst.Config["volatile.idmap.next"]
	}
	var idmap []idmapEntry
	if err := json.Unmarshal([]byte(raw), &idmap); err != nil || len(idmap) == 0 {
		return nil // no id map known: nothing to reason about
	}
	if hostIDMapped(idmap, src.uid, true) || hostIDMapped(idmap, src.gid, false) {
		return nil
	}
	if src.perm&0o005 == 0o005 {
		return nil
	}
	return fmt.Errorf("%w: source %s (alias %q) for unprivileged container %s without Shift: owned by %d:%d with mode %04o, ids the container does not map (it sees them as nobody), and others lack read and search permission; set Shift for an idmapped mount, or chmod o+rx %s, or chown it to an id the container maps",
		mount.ErrUnreadable, c.source, c.alias, inst.Name, src.uid, src.gid, uint32(src.perm), c.source)
}
