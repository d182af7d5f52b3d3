// Package executor is the vocabulary a task runner programs against to run
// work in throw-away or long-running instances, whatever runs them: an
// [Executor] bound to one image makes the image available, creates
// [Instance]s from it and reports their statistics; an Instance starts and
// stops ([Lifecycle]), runs commands with streams and exit codes and gets an
// unprivileged user ([Runner]), takes and gives files and directory trees
// ([Files]), and mounts host directories by alias at /data/<hash> ([Mounts]).
//
// Like database/sql, the package holds the interfaces, the types they
// exchange ([Spec], [Cmd], [FileOptions], [FileInfo], [User],
// [MountOptions], [Stats]), the sentinel errors, the helpers ([Output],
// [CheckName], [CleanPath]) and the pieces every backend reuses
// ([MountHolds], [Sentinel]), and imports no backend: a host whose tests
// use the fake compiles no Incus client. The backends sit beside it and
// import it:
//
//   - executor/incus, the Incus backend, which assembles the imagebuild,
//     netbridge, instance and mount/incus packages from one Config over one
//     shared connection;
//   - executor/fake, in memory, for hosts' own tests;
//   - any custom backend a host writes (see examples/custombackend).
//
// All of them pass the same conformance suite, executor/executortest.
//
// The interfaces mirror Debusine's executor and instance interfaces, so a
// Debusine-style worker maps one to one onto them, and an ISM-style gateway
// uses the same Instance for its long-running servers and shared mounts.
//
// Errors wrap the sentinels below ([ErrNotFound], [ErrNotRunning], ...) for
// errors.Is, whatever the backend: the parts of a backend declare their own
// sentinels with [Sentinel], so that instance.ErrUnavailable is also
// ErrUnavailable and mount.ErrNotHeld is also ErrNotMounted, by
// construction. Every blocking method takes a context first; when it ends,
// the work in flight is cancelled (a running command is killed, an Incus
// operation cancelled on the server).
package executor
