// Package imagetest builds system tarballs for the tests of hosts that turn
// them into images with imagebuild, as net/http/httptest serves handlers for
// the tests of HTTP code.
//
// [Busybox] makes a tiny busybox system in memory, in milliseconds, from the
// host's busybox-static: enough to launch containers, run commands, push and
// pull files, and get an address on a bridge by DHCP. [Debian] describes a
// Debusine-style system tarball, a debootstrapped minbase with systemd;
// [Debian.Tarball] builds it on first use (about a minute, as root, with
// debootstrap and the machine's own apt mirror) and caches it on disk, in
// [CacheDir], for later runs and other processes. [Compressed] gives its
// .tar.gz, .tar.xz or .tar.zst form, as Debusine stores artifacts.
//
// What cannot be built here (no busybox-static, no root, no debootstrap)
// makes an error wrapping [ErrMissingTool], so that a test can skip.
package imagetest
