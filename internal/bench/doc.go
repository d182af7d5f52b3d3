// Package bench measures incusexec against the incus command line and the
// raw Incus API, side by side on one daemon, alternating the two sides run by
// run so that load from elsewhere falls on both alike, and prints a table of
// medians, spreads (min–max), ratios and the targets of issue 9.
//
// Run drives any daemon it is given a client for; it creates its own storage
// pools (dir, and btrfs on a loop file where the daemon supports it), a
// NAT-less bridge, profiles and images, and removes all of them before it
// returns, also on failure. Command is the `incusexec bench` command line
// around it. Config.Quick runs every measurement once, with small files and
// few tasks: a check that the suite works, not a measurement.
package bench
