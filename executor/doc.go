// Package executor is what a task runner programs against to run work in
// throw-away or long-running instances: an [Executor] bound to one image
// makes the image available, creates [Instance]s from it and reports their
// statistics; an Instance starts and stops, runs commands with streams and
// exit codes, takes and gives files and directory trees, gets an
// unprivileged user, and mounts host directories by alias at /data/<hash>.
//
// The interfaces mirror Debusine's executor and instance interfaces, so a
// Debusine-style worker maps one to one onto them, and an ISM-style gateway
// uses the same Instance for its long-running servers and shared mounts.
//
// Three implementations exist and pass the same conformance suite
// (executor/executortest): the Incus backend in this package ([New]), which
// assembles the imagebuild, netbridge, instance and mount packages from one
// [Config] over one shared connection; the in-memory executor/fake for
// hosts' own tests; and any custom backend a host writes (see
// examples/custombackend).
//
// Errors wrap the sentinels below ([ErrNotFound], [ErrNotRunning], ...) for
// errors.Is, whatever the backend. Every blocking method takes a context
// first; when it ends, the work in flight is cancelled (a running command is
// killed, an Incus operation cancelled on the server).
package executor
