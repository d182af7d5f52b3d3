// Package virtserver is an autopkgtest virtualisation server on incusexec:
// the program autopkgtest and sbuild (--chroot-mode=autopkgtest) drive on
// its stdin and stdout to get a testbed, run commands in it, copy files in
// and out, revert it between tests and reboot it.
//
// Server speaks the protocol (autopkgtest's README.virtualisation-server):
// capabilities, open, close, revert, reboot [prepare-only],
// print-execute-command, copydown, copyup, shell and quit, with the
// capabilities revert, revert-full-system, root-on-testbed, reboot, the
// testbed's isolation-container (isolation-machine for a VM) and
// suggested-normal-user=. It talks to a Testbed, a small interface that
// tests fake.
//
// Incus is the Testbed on an Incus instance, made with an instance.Manager
// (so that the owner label is on everything, and the owner's GC removes
// what a killed server left): Open creates it and waits for systemd and the
// network through instance.Ready, without a polling loop of its own, then
// boots a spare from the same image and profiles (a warm pool of its own,
// at the lowest CPU weight, see warmpool.Config.Background); Revert swaps
// the spare in, so that a revert costs no boot and every file, package and
// process is back to a fresh boot, and leaves the replaced instance to be
// deleted at the next revert or at Close, where its deletion does not run
// beside the tests. With IncusConfig.Refill a new spare boots after each
// revert; without (the reference binary's choice on two CPUs or fewer,
// where a boot beside the tests slows them about as much as it saves),
// later reverts boot their instance when asked. The instances are
// ephemeral, as the stock server's are, and Close discards them
// (instance.Discard): it returns once incusd has taken their forced
// stops, and incusd deletes them as they stop, without autopkgtest
// waiting for it. Reboot restarts the
// instance and tells the new boot by the host PID of its init, which does
// not depend on lxcfs; copies go through the instance's file and tree
// transfer.
//
// The execute command (print-execute-command) runs Execute: one command
// as root under env -i with /etc/environment, the default locale and
// /etc/profile, stdin, stdout and stderr forwarded, the command's exit
// status returned (255 becomes 253: autopkgtest keeps 254 and 255 for
// failures of the execute command itself), and background processes still
// holding its output pipes killed once it exits, so that they cannot hang
// it. It goes through instance.Exec, whose recorded output is never lost;
// with IncusConfig.OutputDir (the reference binary's choice when the
// daemon is on this host) the output comes through a directory shared
// with the instance (instance.OutputDir): a testbed command then costs
// about 0.6x as much (the bench in the README).
// The reference binary serves Incus.Execute on an execrelay.Relay in the
// server process, so that a testbed command runs on the server's own
// connection to the daemon and the execute command is a small static
// program (incusexec-virt-exec) that hands its streams over and exits with
// the status; a host may also name a program of its own that calls
// Execute. Either way the program carries what it connects to in its
// arguments: sbuild runs it with a filtered environment. A stdin that is
// the null device reaches Execute as nil (autopkgtest runs every testbed
// command so): a command with a stdin costs a FIFO and a second exec that
// feeds it.
//
// ParseArgs takes autopkgtest-virt-incus's arguments unchanged
// ([-d] [--vm] IMAGE [-- incus launch arguments]).
package virtserver
