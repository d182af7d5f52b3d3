package instance

import "time"

// SetOpWaitSecs shortens the long polls of recorded execs; it returns the
// function that restores the default.
func SetOpWaitSecs(n int) (restore func()) {
	old := opWaitSecs
	opWaitSecs = n
	return func() { opWaitSecs = old }
}

// SetExecLeftoverAge changes how old GC wants a dead exec's output files;
// it returns the function that restores the default.
func SetExecLeftoverAge(d time.Duration) (restore func()) {
	old := execLeftoverAge
	execLeftoverAge = d
	return func() { execLeftoverAge = old }
}

// WaitCleanups waits for the removals Exec left running.
func WaitCleanups(m *Manager) { m.cleanups.Wait() }
