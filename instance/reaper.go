package instance

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrReaperClosed is returned by Reaper.Reap after Close.
var ErrReaperClosed = errors.New("reaper closed")

// Reaper deletes instances in the background, so that a host process that
// keeps running (a worker between tasks) has a task's result without
// waiting for its instance to be torn down, which is most of a second for
// a running container. Instances handed to it carry the manager's owner
// label like any other: if the process dies before the reaper is done,
// Manager.GC (the next run's, or a periodic one) deletes what is left.
//
// A process about to exit must Close the reaper (which waits for the
// deletions) or delete in the foreground instead: a reaper does not outlive
// its process.
type Reaper struct {
	m       *Manager
	timeout time.Duration

	mu      sync.Mutex
	queue   []*Instance
	pending int
	closed  bool
	errs    []error
	idle    *sync.Cond
	work    *sync.Cond
	wg      sync.WaitGroup
}

// ReaperConfig configures a Reaper; the zero value is usable.
type ReaperConfig struct {
	// Workers is the number of deletions run at once (1 when zero: a
	// deletion mostly waits for the server, and one at a time leaves the
	// CPU to the tasks).
	Workers int
	// Timeout bounds each deletion (2 minutes when zero).
	Timeout time.Duration
}

// NewReaper starts a reaper for the manager's instances. Close it.
func (m *Manager) NewReaper(cfg ReaperConfig) *Reaper {
	if cfg.Workers <= 0 {
		cfg.Workers = 1
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Minute
	}
	r := &Reaper{m: m, timeout: cfg.Timeout}
	r.idle = sync.NewCond(&r.mu)
	r.work = sync.NewCond(&r.mu)
	r.wg.Add(cfg.Workers)
	for range cfg.Workers {
		go r.worker()
	}
	return r
}

// Reap hands the instance over for deletion and returns at once; the
// caller must not use it afterwards. After Close it deletes nothing and
// returns ErrReaperClosed.
func (r *Reaper) Reap(in *Instance) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return fmt.Errorf("instance %s: %w", in.Name(), ErrReaperClosed)
	}
	r.queue = append(r.queue, in)
	r.pending++
	r.work.Signal()
	return nil
}

// Pending returns the number of instances handed over and not yet deleted.
func (r *Reaper) Pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pending
}

func (r *Reaper) worker() {
	defer r.wg.Done()
	for {
		r.mu.Lock()
		for len(r.queue) == 0 && !r.closed {
			r.work.Wait()
		}
		if len(r.queue) == 0 {
			r.mu.Unlock()
			return
		}
		in := r.queue[0]
		r.queue = r.queue[1:]
		r.mu.Unlock()

		ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
		err := in.Delete(ctx)
		cancel()
		if err != nil {
			r.m.log.Warn("reaper: delete failed; GC will retry", "name", in.Name(), "err", err)
		}

		r.mu.Lock()
		if err != nil {
			r.errs = append(r.errs, err)
		}
		r.pending--
		if r.pending == 0 {
			r.idle.Broadcast()
		}
		r.mu.Unlock()
	}
}

// Drain waits until every instance handed over so far is deleted (or its
// deletion failed), or ctx ends. It returns the deletions that failed since
// the last Drain, joined.
func (r *Reaper) Drain(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		r.mu.Lock()
		r.idle.Broadcast()
		r.mu.Unlock()
	})
	defer stop()
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.pending > 0 && ctx.Err() == nil {
		r.idle.Wait()
	}
	errs := r.errs
	r.errs = nil
	if r.pending > 0 {
		errs = append(errs, fmt.Errorf("reaper: %d deletions still under way: %w", r.pending, ctx.Err()))
	}
	return errors.Join(errs...)
}

// Close stops taking instances and waits for the deletions handed over
// (as Drain does); when ctx ends first, the workers finish in the
// background and Close returns what is still pending.
func (r *Reaper) Close(ctx context.Context) error {
	r.mu.Lock()
	r.closed = true
	r.work.Broadcast()
	r.mu.Unlock()
	err := r.Drain(ctx)
	if ctx.Err() == nil {
		r.wg.Wait()
	}
	return err
}
