// Package incus is the Incus implementation of mount.Mounter and
// mount.Inspector: a [Manager] attaches host directories to Incus
// instances as disk devices at /data/<hash of alias>, reference-counted per
// instance and alias, with the counts kept on the server.
//
// # Reference counting on the server
//
// A Manager keeps no count of its own: the server
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
// it fails with mount.ErrInUse.
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
// The Incus client package is imported here as incusclient.
package incus
