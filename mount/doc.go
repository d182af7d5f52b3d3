// Package mount shares host directories with instances: a host (an
// ISM-style gateway, a Debusine-style worker) acquires a directory for an
// instance under an alias of its choosing, the task inside finds it at
// /data/<hash of the alias>, and the directory stays attached for as long
// as anyone holds it.
//
// # Paths
//
// An alias is any UTF-8 string of 1 to 255 bytes without control
// characters ("isabelle/heaps", "debian/bookworm/cache"). It appears inside
// every instance, on every host, across restarts, at
//
//	/data/<first 32 hex digits of SHA-256(alias)>
//
// (AliasHash, Path), which a shell computes with
//
//	printf %s "$alias" | sha256sum | cut -c1-32
//
// 128 bits make collisions a non-concern, and the path reveals nothing a
// task could use to guess another alias's name.
//
// # Reference counting
//
// Acquire returns a Handle; Release gives it back. Per instance and alias,
// the first Acquire attaches the directory and the last Release detaches it;
// the Acquires in between only take holds. A handle is a plain value that a
// host may store and release later, from another Manager or another process.
//
// The Incus implementation, Manager, keeps no count of its own: the server
// is the truth. A mounted alias is
//
//   - a disk device named incusexec-mount-<hash> (DeviceName; 48
//     characters, within Incus's 63) with source set to the resolved host
//     directory, path /data/<hash>, and readonly, shift and propagation as
//     asked, and
//   - an instance configuration key user.incusexec.mount.<hash> whose value
//     is the JSON record {"alias":"<alias>","holders":{"<holder ID>":"<owner>"}}
//     listing every hold with the Config.Owner of the manager that took it.
//
// Both change together in one update of the instance guarded by its ETag,
// so the device exists exactly while the record lists holders, and an
// update that raced with another writer (another manager, another process,
// an operator) is refused by the server and redone on the fresh state. A
// device without a record, or a record without its device, is not a mount
// of this package and is never touched; an acquire that would collide with
// it fails with ErrInUse.
//
// Within a process, changes to one instance are written by one goroutine at
// a time, and everything queued while it writes goes into its next update
// ("group commit"): a thousand concurrent Acquires of one alias attach it
// once, in a handful of updates. An update the server refuses for one change
// (a device that cannot be attached) is redone change by change, so only
// that change fails. A caller whose context ends while its Acquire is being
// written gets the context's error, and the hold is released again.
//
// A Manager that starts after a crash or restart therefore finds every mount
// and every hold where the last one left them (Mounts lists them, with their
// owners), attaches nothing twice, and releases the previous process's
// handles if the host kept them. When an instance vanishes, ephemeral or
// deleted, its devices and records go with it: Release of its handles
// succeeds, Acquire and Mounts report ErrNotFound, and the manager keeps
// nothing about it.
//
// # The allowlist
//
// Sources come from tasks; the allowlist is the boundary between them and
// the host's files. Each Manager has allowed roots (Config.AllowedRoots); a
// source must be absolute, exist, be a directory and, after resolving every
// symlink, be a root or lie under one. Otherwise Acquire fails with
// ErrNotAllowed and nothing is attached. The resolved path, not the one
// given, is what the server mounts.
//
// On a cluster the check runs where this process runs, while incusd looks
// for the source on the member hosting the instance: the directory must
// exist there too (a shared file system, or the same path on every member).
// When it does not, Acquire fails with ErrSourceMissing naming the member and
// the path, and attaches nothing.
//
// Residual risk: incusd opens the source path again when it attaches the
// device, following symlinks. A task able to rename directories on the
// resolved path (in a shared, writable part of an allowed root) can swap a
// component for a symlink between the check and the attach, and have a
// directory outside the roots attached. Acquire re-checks the path after
// the attach and releases the hold when it no longer resolves to itself,
// which narrows the window without closing it (a swap and swap back in
// between goes unnoticed). Keep the parents of sources out of tasks' reach,
// or run instances in an Incus project whose restricted.devices.disk.paths
// lists the same roots: incusd then opens sources beneath the root with
// openat2(RESOLVE_BENEATH) and refuses escapes itself (Incus does not allow
// shift with restricted paths). Symlinks inside a mounted directory are
// harmless: the instance resolves them in its own file system.
//
// # Options
//
// ReadOnly mounts read-only. Propagation sets the mount's propagation
// ("private" by default). Shift makes an idmapped mount so that an
// unprivileged container's root owns what the host's root owns; without it
// host files owned by root appear owned by nobody, readable only through
// their "other" permission bits. Shift needs a kernel and file system with
// idmapped mounts (Linux 5.12 or later; verified on 6.18 with ext4) and
// applies to containers only. A source that nobody inside could read that
// way (owner and group not mapped by the container, no read and search for
// others: a root-owned 0700 directory, say) is refused with ErrUnreadable
// naming the source and the remedies, rather than attached to fail every
// access inside; privileged containers, VMs and sources with a POSIX ACL
// are not checked. All holds of a mount share its options and
// source; an Acquire asking for others fails with ErrInUse.
//
// # Other implementations
//
// Package mount/hostbind implements Mounter with bind mounts into
// per-instance directories on the host, for executors without Incus, and
// package mount/mounttest is the conformance suite both pass.
package mount
