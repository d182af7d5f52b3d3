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
// network through instance.Ready, without a polling loop of its own;
// Revert swaps in a spare already booted from the same image and profiles
// (a warm pool the testbed keeps) and deletes the old instance, so that a
// revert costs no boot and every file, package and process is back to a
// fresh boot; Reboot restarts the instance and tells the new boot by the
// host PID of its init, which does not depend on lxcfs; copies go through
// the instance's file and tree transfer.
//
// The execute command (print-execute-command) is a program of the host's
// (the reference binary's "virt-exec") that calls Execute: one command as
// root under env -i with /etc/environment, the default locale and
// /etc/profile, stdin, stdout and stderr forwarded, the command's exit
// status returned (255 becomes 253: autopkgtest keeps 254 and 255 for
// failures of the execute command itself), and background processes still
// holding its output pipes killed once it exits, so that they cannot hang
// it. A stdin that is the null device should reach Execute as nil
// (autopkgtest runs every testbed command so): a command with a stdin costs
// a FIFO and a second exec that feeds it. The program must carry the
// connection to the daemon in its arguments: sbuild runs it with a filtered
// environment.
//
// ParseArgs takes autopkgtest-virt-incus's arguments unchanged
// ([-d] [--vm] IMAGE [-- incus launch arguments]).
package virtserver
