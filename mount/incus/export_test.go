package incus

// QueueLen reports how many changes wait for instance's writer.
func QueueLen(m *Manager, instance string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if q := m.queues[instance]; q != nil {
		return len(q.pending)
	}
	return 0
}
