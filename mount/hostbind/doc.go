// Package hostbind implements mount.Mounter for executors without Incus (a
// systemd-style executor running tasks in services or nspawn containers on
// the host): each instance has a data directory on the host, which the
// executor binds to /data inside the instance, and an acquired alias is a
// bind mount of the source at <data directory>/<hash of the alias>, so
// that the task finds it at the same mount.Path(alias) as under Incus.
//
// Layout, under Config.Root:
//
//	<Root>/<instance>/             created by CreateInstance; its presence
//	                               is the instance's existence
//	<Root>/<instance>/data/        bind this to /data in the instance
//	<Root>/<instance>/data/<hash>  one bind mount per acquired alias
//	<Root>/<instance>/mounts.json  the holds, out of the instance's reach
//
// mounts.json is the record that the mount/incus Manager keeps in the instance's
// configuration: {"<hash>": {"alias", "source", "options", "holders":
// {"<holder ID>": "<owner>"}}}. It is rewritten atomically under an flock of
// the instance directory, so managers in several processes share it, and a
// new manager after a restart picks up the holds. An entry whose bind mount
// is gone (the host rebooted) is dropped; a stray bind mount without an
// entry (a crash between mounting and recording) is replaced on the next
// acquire of its alias and removed by RemoveInstance.
//
// Sources are checked against the allowlist like the mount/incus Manager does, and
// then, closing the window the mount/incus Manager leaves open, opened with
// openat2(RESOLVE_NO_SYMLINKS) on the resolved path, checked again through
// the descriptor, and mounted from the descriptor: a symlink swapped in
// after the check is refused instead of followed.
//
// Mounts made after an instance started appear inside it only if the
// instance's /data is a slave of the host's data directory: under systemd,
// BindPaths=<Root>/<instance>/data:/data in a unit gives exactly that while
// the host's root mount is shared (systemd's default); a bare mount
// namespace needs "mount --make-rslave". Options.Shift is not supported
// (there is no user namespace to map to) and fails with mount.ErrInvalid
// wrapping errors.ErrUnsupported. Mounting needs CAP_SYS_ADMIN.
package hostbind
