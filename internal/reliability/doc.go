// Package reliability holds incusexec's fault-injection, load and
// hostile-input tests, which cross package boundaries: a host process killed
// at random points, incusd restarted under running calls, a storage pool that
// fills up, fifty task runs at once, commands that misbehave, input chosen to
// escape an owner's objects, and the secure defaults of a launched instance.
//
// The package has no API: it is its tests and the helpers they share.
// `go test ./internal/reliability` runs the short variant; with
// INCUSEXEC_SOAK=1 the fault loop runs SoakRounds rounds. RELIABILITY.md at
// the repository root records the figures and the commands reproducing them.
package reliability
