// Package bench measures incusexec against the incus command line and the
// raw Incus API, side by side on one daemon, alternating the two sides run by
// run so that load from elsewhere falls on both alike, and prints a table of
// medians, spreads (min–max), ratios (incusexec / reference) and, per row,
// the highest ratio that counts as met: split image import ≤ 1.5x of `incus
// image import`; start to ready ≤ 0.75x of `incus launch` plus an exec loop
// and ≤ 1.1x of the raw API; exec round trip p50 ≤ 0.6x of `incus exec`;
// push and pull ≤ 1.0x of `incus file push/pull`; 20 tasks at concurrency 4
// ≤ 0.33x of the same run one by one through the CLI; a warm pool claim
// ≤ 0.1x of a cold start. The targets live next to each measurement in
// bench.go (the last argument of Table.add).
//
// Run drives any daemon it is given a client for; it creates its own storage
// pools (dir, and btrfs on a loop file where the daemon supports it), a
// NAT-less bridge, profiles and images, and removes all of them before it
// returns, also on failure. Command is the `incusexec bench` command line
// around it. Config.Quick runs every measurement once, with small files and
// few tasks: a check that the suite works, not a measurement.
package bench
