package instance

// SetOpWaitSecs shortens the long polls of recorded execs; it returns the
// function that restores the default.
func SetOpWaitSecs(n int) (restore func()) {
	old := opWaitSecs
	opWaitSecs = n
	return func() { opWaitSecs = old }
}
