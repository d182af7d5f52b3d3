// Package incusop bridges Go contexts onto the Incus client, whose calls
// mostly take none: requests are bound to a context with [Bind], and
// operations are awaited with [Wait], which cancels the server-side operation
// when the context ends first.
package incusop

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	incus "github.com/lxc/incus/v6/client"
	"github.com/lxc/incus/v6/shared/api"
)

// Operation is the part of an Incus operation that Wait needs.
type Operation interface {
	WaitContext(ctx context.Context) error
	Get() api.Operation
}

// Canceller cancels a server-side operation by its ID; the Incus client is
// one.
type Canceller interface {
	DeleteOperation(uuid string) error
}

// Wait waits for op. When ctx ends first it asks the server to cancel the
// operation through c, when c is a Canceller (where Incus allows it: not all
// operations can be cancelled), and returns an error wrapping ctx's cause.
//
// The operation is awaited on a context without ctx's deadline or
// cancellation, and ctx is watched here instead: an operation of a client
// made with SkipGetEvents waits by asking the server with a whole-second
// timeout derived from the deadline, ignores cancellation, and reports
// success for an operation still running once less than a second is left.
// The operation's ID is read before waiting, and the cancel goes through c
// rather than op.Cancel, which would race with a client that updates the
// operation from its event listener.
func Wait(ctx context.Context, op Operation, c any) error {
	id := op.Get().ID
	done := make(chan error, 1)
	go func() { done <- op.WaitContext(context.WithoutCancel(ctx)) }()
	var err error
	select {
	case err = <-done:
		if err == nil {
			return nil
		}
		if ctx.Err() == nil {
			return err
		}
	case <-ctx.Done():
	}
	if cc, ok := c.(Canceller); ok && id != "" {
		_ = cc.DeleteOperation(id)
	}
	return fmt.Errorf("%w (operation cancelled)", context.Cause(ctx))
}

// Events opens an event listener on a copy of c (same connection and
// project), so that c's own state is left alone (see [Shared]). With types,
// the copy asks the server for events of those types only ("lifecycle",
// "operation", "logging"): the server then sends nothing else, where a
// listener of all types gets every operation's every update and every
// log line, each encoded by the server and decoded here. The connection is
// the copy's own, so no other listener of c's shares the filter. Clients
// that cannot be copied are asked directly, for all types (a handler
// added for some types still sees only those).
func Events(c interface {
	GetEvents() (*incus.EventListener, error)
}, types ...string) (*incus.EventListener, error) {
	type copier interface {
		GetConnectionInfo() (*incus.ConnectionInfo, error)
		UseProject(name string) incus.InstanceServer
	}
	if cp, ok := c.(copier); ok {
		if info, err := cp.GetConnectionInfo(); err == nil {
			cc := cp.UseProject(info.Project)
			if len(types) > 0 {
				return cc.GetEventsByType(slices.Clone(types))
			}
			return cc.GetEvents()
		}
	}
	return c.GetEvents()
}

// Bind returns a copy of c whose HTTP requests carry ctx, so that a blocked
// request ends with the context; c itself is left as it was. Clients that
// cannot carry a context are returned unchanged.
//
// The copy is made with UseProject (same connection, same project): the Incus
// client's own WithContext (v6, still in v6.23.0) sets the context on the
// client it is called on, which would leave a shared client bound to a
// context that ends.
//
// Copying reads the client's fields, and the v6 client writes one of them
// without a lock in GetServer (it caches the answer). A client shared between
// goroutines must therefore never be asked GetServer directly: ask
// Bind(ctx, c).GetServer() instead.
func Bind[C any](ctx context.Context, c C) C {
	type copier interface {
		GetConnectionInfo() (*incus.ConnectionInfo, error)
		UseProject(name string) incus.InstanceServer
	}
	type withContext interface {
		WithContext(context.Context) incus.InstanceServer
	}
	cp, ok := any(c).(copier)
	if !ok {
		return c
	}
	info, err := cp.GetConnectionInfo()
	if err != nil {
		return c
	}
	clone, ok := cp.UseProject(info.Project).(withContext)
	if !ok {
		return c
	}
	if bound, ok := any(clone.WithContext(ctx)).(C); ok {
		return bound
	}
	return c
}

// Poll calls check every interval until it reports done, returns an error,
// or ctx ends; then it returns check's error or one that wraps ctx's and
// names what was last seen.
func Poll(ctx context.Context, interval time.Duration, check func() (done bool, seen string, err error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	var seen string
	for {
		done, s, err := check()
		if err != nil || done {
			return err
		}
		seen = s
		select {
		case <-ctx.Done():
			if seen == "" {
				return context.Cause(ctx)
			}
			return fmt.Errorf("%w (last seen: %s)", context.Cause(ctx), seen)
		case <-t.C:
		}
	}
}

// ErrCancelled is returned by fakes' operations that were cancelled.
var ErrCancelled = errors.New("operation cancelled")
