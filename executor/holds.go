package executor

import (
	"context"
	"errors"
	"sync"
)

// MountHolds is the bookkeeping behind Instance.Mount and Unmount that
// every backend over a reference-counting mounter (package mount) needs:
// the holds an instance handle took, by alias, so that each Unmount
// releases one of them, the most recent first. H is the mounter's handle
// (mount.Handle). The zero MountHolds is empty and ready; it is safe for
// concurrent use.
type MountHolds[H any] struct {
	mu   sync.Mutex
	held map[string][]H
}

// Add records h, a hold of alias just taken.
func (m *MountHolds[H]) Add(alias string, h H) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.held == nil {
		m.held = map[string][]H{}
	}
	m.held[alias] = append(m.held[alias], h)
}

// Clear forgets every hold (the instance was deleted, and its mounts with
// it).
func (m *MountHolds[H]) Clear() {
	m.mu.Lock()
	m.held = nil
	m.mu.Unlock()
}

// take removes and returns the most recent hold of alias.
func (m *MountHolds[H]) take(alias string) (H, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	hs := m.held[alias]
	if len(hs) == 0 {
		var zero H
		return zero, false
	}
	h := hs[len(hs)-1]
	m.held[alias] = hs[:len(hs)-1]
	return h, true
}

// Release releases one hold of alias with release: the most recent one
// recorded here or else, when there is none (the hold was taken by an
// earlier process, or through another handle), the one find returns
// (find may be nil: an error wrapping ErrNotMounted, which find should
// return too when the mounter has no hold of alias either). A hold
// recorded here whose release fails for another reason than
// ErrNotMounted is kept, for a later Unmount to try again.
func (m *MountHolds[H]) Release(ctx context.Context, alias string, find func(ctx context.Context) (H, error), release func(ctx context.Context, h H) error) error {
	h, local := m.take(alias)
	if !local {
		if find == nil {
			return &notMounted{alias}
		}
		var err error
		if h, err = find(ctx); err != nil {
			return err
		}
	}
	if err := release(ctx, h); err != nil {
		if local && !errors.Is(err, ErrNotMounted) {
			m.Add(alias, h)
		}
		return err
	}
	return nil
}

type notMounted struct{ alias string }

func (e *notMounted) Error() string { return "unmount " + e.alias + ": " + ErrNotMounted.Error() }
func (e *notMounted) Unwrap() error { return ErrNotMounted }
