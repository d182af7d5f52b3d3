// Package testimage builds the images incusexec's tests, benchmarks and demo
// use: a busybox system from Debian's busybox-static in milliseconds, and a
// debootstrapped Debian system tarball with systemd, cached per suite, its
// mirror taken from the machine's apt sources.
package testimage
