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
// host may store and release later, from another mounter or another process.
//
// The Incus implementation is package mount/incus: it keeps the counts on
// the server, so that a restarted host finds every hold (see its package
// documentation).
//
// # The allowlist
//
// Sources come from tasks; the allowlist is the boundary between them and
// the host's files. Each mounter has allowed roots ([Allowlist]); a
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
// # Names, options and errors
//
// The options of a mount are executor.MountOptions, checked by
// [ValidateOptions]; instance names are checked by [CheckInstance]
// (executor.CheckName). Errors wrap this package's sentinels, each of
// which is also an executor sentinel (ErrNotHeld is executor.ErrNotMounted,
// ErrNotAllowed executor.ErrNotAllowed, ...).
//
// # Implementations
//
// Package mount/incus implements Mounter with disk devices of Incus
// instances; package mount/hostbind with bind mounts into per-instance
// directories on the host, for executors without Incus; package
// mount/mounttest is the conformance suite both pass. [HandleOf] finds an
// owner's hold through any Inspector, for a backend that took none itself.
package mount
