// Package mounttest is the conformance suite of mount.Mounter: every
// implementation (the Incus one, hostbind, a host's own) runs Run and so
// shows the same reference-counting, allowlist and restart behaviour.
//
// A Harness tells the suite how to make managers and instances and how to
// look inside an instance; the suite then checks, through the instance's
// eyes, that shared aliases show the same files in every instance at
// mount.Path, that read-only holds, that a mount goes exactly when its last
// hold is released in any order, that 1000 concurrent calls leave the
// mounts matching the holds (and, with Harness.Transitions, attach and
// detach each mount exactly once), that a new manager takes over the holds
// of an old one, that a vanished instance's handles release cleanly, that
// sources outside the allowlist or escaping it through symlinks are
// refused with nothing attached, and (where supported) that Shift maps
// owners.
package mounttest
