package hostbind

// SetTransitionHook makes m report every bind mount it makes or removes.
func SetTransitionHook(m *Manager, f func(instance, hash string, attached bool)) {
	m.onTransition = f
}
