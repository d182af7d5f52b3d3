// Package imagebuild turns a Debian system tarball (a root filesystem as
// .tar, .tar.gz, .tar.xz or .tar.zst, as Debusine stores them) into an Incus
// image with the alias artifact/<ID>, ready to launch containers from; and a
// qcow2 (or raw) disk into a virtual-machine image.
//
// A worker calls [Importer.Import] before creating instances and
// [Importer.Delete] when the artifact is gone. Import is idempotent: when the
// alias exists the image is reused (with [Options.Replace] the alias is
// swapped atomically to a fresh import and the old image deleted once no
// instance uses it). Imports of one artifact from several goroutines share
// one upload; from several processes on one host, a lock file per server
// and alias serialises them, and the loser of a race between hosts finds
// the alias taken and drops its own image.
//
// # Why it streams, and why split is the default
//
// Rewriting a 250 MB root filesystem (re-rooting it under rootfs/ and
// recompressing, as image builders usually do) costs minutes; Incus accepts
// a "split" image instead: a small metadata tarball plus the root
// filesystem as it is. Everything incusexec adds lives in the metadata
// tarball as Incus templates, which Incus writes into the container when it
// is created: /etc/hostname and /etc/hosts, and incusexec's own systemd
// generator at /etc/systemd/system-generators/lxc (mode 0755). At every
// boot the generator enables systemd-networkd (so the NIC host0 gets DHCP
// through Debian's 80-container-host0.network) and a unit of its own that
// holds the boot until host0 has its IPv4 address (so "running" means
// addressed, without systemd-networkd-wait-online's second-long wait for
// IPv6 link-local duplicate address detection), gives networkd a read-only /sys so that it
// does not wait for a udev that containers do not run, masks units that
// cannot work in a container, relaxes unit sandboxing that fails under a
// user namespace, and repairs a root directory of mode 0700. So the root
// filesystem goes to Incus byte for byte, and a split import costs little
// more than the upload.
//
// The stream is validated while it uploads: a tee feeds a copy through the
// decompressor and a tar parser that refuses absolute names, "..", paths
// through symbolic links, hard links to anything not earlier in the archive,
// sparse entries, absurd sizes, and a root filesystem without /sbin/init or
// /usr/sbin/init. The end of the upload is held back until the validation
// has passed, so a bad archive aborts the request before Incus has an
// image: nothing is left to clean up. Cancelling ctx aborts the same way,
// or deletes the image if the server already made it. Checking an xz
// stream means decompressing all of it, which costs several times the
// upload itself; a host that already trusts the stream can set
// [Options.SkipValidation].
//
// [Unified] mode writes one tarball instead, with every entry re-rooted
// under rootfs/ (hard-link targets rewritten, symbolic links and device
// nodes kept) and compressed with none, gzip or zstd, through a pipe
// straight into the upload: for hosts that want the additions inside the
// root filesystem, or to trade import time for launch time.
//
// xz and zstd streams are decompressed (and zstd compressed) by the host's
// xz and zstd binaries running as filters on pipes: the standard library
// reads neither, the binaries are faster than Go implementations and use
// every core, and the module needs no compression dependency. Incus itself
// needs them anyway to unpack such images.
//
// Errors wrap [ErrBadSource], [ErrBadArchive], [ErrUnsafeEntry], [ErrNoInit],
// [ErrUnknownArchitecture], [ErrConflict], [ErrNotFound] and [ErrInUse],
// with the entry, alias or file at fault in the message.
package imagebuild
