// Package incusexec runs work inside Incus system containers and virtual
// machines on behalf of task runners: Debusine-style workers that build and
// test Debian packages in throw-away instances, and ISM-style service managers
// that keep a pool of long-running servers with shared host directories.
//
// The module is a set of small packages, each about one thing, each exposing
// what it does through interfaces so that a host can use the Incus-backed
// implementation, a fake in its own tests, or a backend of its own:
//
//   - imagebuild turns a Debian system tarball (a root filesystem as .tar,
//     .tar.gz, .tar.xz or .tar.zst) into an Incus image with alias
//     artifact/<ID>: metadata.yaml, hostname and hosts templates,
//     systemd-networkd enabled and incusexec's own systemd generator for
//     containers. It streams: the root filesystem is never copied to disk.
//     A qcow2 disk becomes a VM image the same way. imagebuild/imagetest
//     builds system tarballs for a host's tests (busybox, or Debian with
//     systemd), as net/http/httptest serves handlers.
//   - netbridge makes sure a managed bridge network and the profiles that wire
//     instances to it exist and stay as specified (idempotent, drift-correcting,
//     owner-labelled), removes them when their owner is done, and renders the
//     host firewall rules a default-deny host needs.
//   - instance is the lifecycle of one instance over the Incus REST API:
//     create with a collision-safe name, start, wait until ready, exec with
//     streams and exit codes, push and pull files and trees, statistics, stop
//     gracefully then by force, delete, and garbage-collect what a crashed
//     host left behind.
//   - mount attaches host directories to instances at /data/<hash of alias>,
//     reference-counted per instance and alias, with an allowlist of source
//     roots as the boundary between a task and the host's files; mount/incus
//     does it with disk devices of Incus instances (the counts kept on the
//     server), mount/hostbind with bind mounts for hosts without Incus.
//   - instance/warmpool keeps instances created (and optionally booted) ahead
//     of demand; a claim takes one by compare-and-swap on its configuration,
//     safe across goroutines and processes.
//   - executor is the vocabulary a host programs against, database/sql
//     style: an Executor bound to an image that creates Instances, the types
//     they exchange (Cmd, FileOptions, FileInfo, User, MountOptions, Stats),
//     the sentinel errors and the pieces every backend reuses. It imports no
//     backend and no Incus package. executor/incus is the Incus backend,
//     which assembles imagebuild, netbridge, instance and mount/incus from
//     one configuration over one connection; executor/fake is an in-memory
//     executor for hosts' tests; executor/executortest is the conformance
//     suite that the Incus backend, the fake and any custom backend all
//     pass.
//
// The dependencies point one way: executor at the bottom; instance, mount,
// imagebuild and netbridge use its types and derive their sentinels from
// its own (executor.Sentinel), so that errors.Is(err, executor.ErrNotFound)
// holds whatever part failed; executor/incus on top of them all; hosts pick
// a backend and program against executor.
//
// A Debusine-style worker builds an executor for a system tarball artifact,
// asks it to make the image available (imagebuild), to create an ephemeral
// instance on the shared bridge and profile (netbridge, instance), pushes the
// inputs, runs the task as an unprivileged user, pulls the results, and stops
// and deletes the instance; periodically it garbage-collects leaked instances
// by owner. An ISM-style gateway creates long-running instances on a
// prefixed bridge and acquires shared directories for them (mount) as
// sessions come and go.
//
// Each package declares the few Incus client methods it calls as a small
// interface of its own; the client from github.com/lxc/incus/v6/client
// satisfies all of them, and the fakes only what they must. Every blocking
// call takes a context first and cancels the server-side operation when the
// context ends; errors wrap sentinels (instance.ErrNotFound,
// mount.ErrNotAllowed, ..., each also an executor sentinel) for errors.Is;
// logging goes to an injected
// *slog.Logger.
//
// On a cluster the same calls work through any member over HTTPS with a client
// certificate: placement by member, cluster group or scheduler, images
// imported once, bridges defined per member.
//
// The reference binary examples/incusexec is a thin command line over the
// library; `make demo` runs its demo against a real daemon, `make bench` the
// benchmark suite of internal/bench against the incus CLI, and `make test`
// runs the unit tests, the fakes' tests and the integration tests against
// private incusd daemons and clusters started by internal/incustest.
package incusexec
