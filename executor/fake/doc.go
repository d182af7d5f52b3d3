// Package fake is an in-memory executor.Executor for hosts' tests: no
// daemon, no root, instant, and faithful where it matters — it passes the
// same conformance suite (executor/executortest) as the Incus backend.
//
// Instances are state machines (stopped, running, gone) that refuse what the
// real ones refuse: Exec on a stopped instance fails with
// executor.ErrNotRunning, anything but Stop and Delete on a deleted one with
// executor.ErrNotFound, and an ephemeral instance is gone once stopped. Each
// has an in-memory file tree with modes and owners for Push, Pull, Stat,
// Mkdir and the tree copies; mounts expose real host directories at
// /data/<hash of alias>, reference-counted, behind an allowlist of roots.
//
// Commands run through handlers: Executor.Commands scripts them by name, and
// the built-in commands (Builtins) are the conformance suite's vocabulary.
// FailOn injects a failure into the n-th call of any operation; Calls
// returns the record of calls made. Set the exported fields before use,
// like httptest.Server's.
package fake
