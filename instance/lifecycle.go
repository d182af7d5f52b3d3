package instance

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/incusexec/incusexec/internal/incusop"
	"github.com/lxc/incus/v6/shared/api"
)

// Instance is a handle on one instance of a Manager. It holds no server
// resources; several handles on the same instance may be used at once.
type Instance struct {
	m    *Manager
	name string

	usersMu sync.Mutex
	users   map[string]account // resolved and created users, by spec

	outMu  sync.Mutex
	outDir *OutputDir // set by UseOutputDir
}

// Name returns the instance name.
func (in *Instance) Name() string { return in.name }

// Status returns the instance's status code (api.Running, api.Stopped, ...).
func (in *Instance) Status(ctx context.Context) (api.StatusCode, error) {
	inst, _, err := incusop.Bind(ctx, in.m.c).GetInstance(in.name)
	if err != nil {
		return 0, wrapErr(err, in.name, "get")
	}
	return inst.StatusCode, nil
}

// Location returns the cluster member the instance is on ("" on a server
// that is not clustered, or "none" as some Incus versions report it there).
// On a cluster, Spec.Target chose it, or the cluster's scheduler did.
func (in *Instance) Location(ctx context.Context) (string, error) {
	inst, _, err := incusop.Bind(ctx, in.m.c).GetInstance(in.name)
	if err != nil {
		return "", wrapErr(err, in.name, "get")
	}
	return inst.Location, nil
}

// Start starts the instance; starting a running instance is not an error.
// It does not wait for readiness (see WaitReady). A start the server refuses
// because the instance's network is out of service (`Network "x"
// unavailable on this server`: incusd failed to start the network when it
// started, and tries again a minute later) is retried until ctx ends.
func (in *Instance) Start(ctx context.Context) error {
	return wrapErr(in.start(ctx), in.name, "start")
}

// start starts the instance. A start the server refuses because the
// instance's network is out of service (isNetworkUnavailable) is tried
// again, after 100 ms doubling up to 2 s, as long as ctx allows.
func (in *Instance) start(ctx context.Context) error {
	var retry networkRetry
	for {
		err := in.changeState(ctx, api.InstanceStatePut{Action: "start"})
		if err == nil || isAlreadyRunning(err) {
			return nil
		}
		if err := retry.wait(ctx, err, in.m.log, "network unavailable; retrying start", "name", in.name); err != nil {
			return err
		}
	}
}

// Stop shuts the instance down gracefully and forces it off when it is not
// down after the manager's StopGrace. Stopping a stopped or deleted instance
// is not an error (an ephemeral instance is gone once stopped).
func (in *Instance) Stop(ctx context.Context) error {
	return in.StopWithin(ctx, in.m.cfg.StopGrace)
}

// StopWithin is Stop with a grace period of its own; zero forces the
// instance off at once. Incus counts graceful timeouts in whole seconds, so
// grace is rounded up to one.
func (in *Instance) StopWithin(ctx context.Context, grace time.Duration) error {
	if grace < 0 {
		return fmt.Errorf("%w: negative grace period %s", ErrInvalid, grace)
	}
	if grace == 0 {
		// Straight to the point: no look first (teardown speed), and an
		// instance already stopped or gone is what was wanted.
		for {
			err := in.changeState(ctx, api.InstanceStatePut{Action: "stop", Force: true, Timeout: -1})
			if err == nil || isGone(err) || isNotRunning(err) {
				return nil
			}
			// Another operation holds the instance (a device update of a
			// host killed mid-call, say): it ends soon; wait for it.
			if !isBusy(err) || ctx.Err() != nil {
				return wrapErr(err, in.name, "force stop")
			}
			in.m.log.Debug("instance busy; force stop retried", "name", in.name, "err", err)
			select {
			case <-ctx.Done():
				return wrapErr(err, in.name, "force stop")
			case <-time.After(in.m.cfg.PollInterval):
			}
		}
	}
	st, err := in.Status(ctx)
	if errors.Is(err, ErrNotFound) || err == nil && st == api.Stopped {
		return nil
	}
	if err != nil {
		return err
	}
	err = in.changeState(ctx, api.InstanceStatePut{Action: "stop", Timeout: seconds(grace)})
	if err == nil || isGone(err) || isNotRunning(err) {
		return nil
	}
	if ctx.Err() != nil {
		return wrapErr(err, in.name, "stop")
	}
	in.m.log.Info("graceful stop did not finish; forcing", "name", in.name, "grace", grace, "err", err)
	return in.StopWithin(ctx, 0)
}

// Restart restarts the instance, gracefully first as Stop does, and waits
// until it is ready by r. An ephemeral instance survives a restart.
func (in *Instance) Restart(ctx context.Context, r Ready) error {
	err := in.changeState(ctx, api.InstanceStatePut{Action: "restart", Timeout: seconds(in.m.cfg.StopGrace)})
	if err != nil && ctx.Err() == nil && !isGone(err) && !isNotRunning(err) && !isNetworkUnavailable(err) {
		in.m.log.Info("graceful restart did not finish; forcing", "name", in.name, "err", err)
		err = in.changeState(ctx, api.InstanceStatePut{Action: "restart", Force: true, Timeout: -1})
	}
	if err != nil && (isNotRunning(err) || isNetworkUnavailable(err)) {
		// Restart of a stopped instance, or one whose start the server
		// refused after stopping it: start it.
		err = in.start(ctx)
	}
	if err != nil {
		return wrapErr(err, in.name, "restart")
	}
	return in.WaitReady(ctx, r)
}

// Delete forces the instance off and deletes it; deleting an instance that
// is already gone, or that another delete (a GC, a pool's reclaim) removes
// meanwhile, is not an error; when that other delete fails, Delete goes on
// trying. Call Stop first for a graceful shutdown.
func (in *Instance) Delete(ctx context.Context) error {
	return in.delete(ctx, 0)
}

// Discard gets rid of an ephemeral instance without waiting for it to go:
// it asks the server to stop the instance at once (SIGKILL) and returns
// when the server has taken the request; the server deletes an ephemeral
// instance when it has stopped, with no client waiting. What the caller
// does not wait for is mostly waiting itself: a forced stop of a Debian
// container took 0.72-0.79 s here, of which 0.14-0.21 CPU-seconds (the
// kernel's and incusd's teardown), and the deletion after it 0.04-0.07 s
// (2026-12-01). Until it is gone the instance keeps its owner label, so
// that the owner's GC removes it should the server fail to: a deletion
// that fails after the stop, or a stop sent while a restart is under way,
// which the restart takes over (the instance comes back up).
//
// An instance that is not ephemeral, or not running, is deleted as Delete
// does; one already gone is fine.
func (in *Instance) Discard(ctx context.Context) error {
	inst, _, err := incusop.Bind(ctx, in.m.c).GetInstance(in.name)
	if err != nil {
		if err = wrapErr(err, in.name, "get"); isGone(err) {
			return nil
		}
		return err
	}
	if !inst.Ephemeral || inst.StatusCode != api.Running {
		return in.Delete(ctx)
	}
	if _, err := in.m.c.UpdateInstanceState(in.name, api.InstanceStatePut{Action: "stop", Force: true, Timeout: -1}, ""); err != nil {
		if err = wrapErr(err, in.name, "force stop"); isGone(err) {
			return nil
		}
		return err
	}
	in.m.log.Info("instance discarded (the server stops and deletes it)", "name", in.name)
	return nil
}

func (in *Instance) delete(ctx context.Context, grace time.Duration) error {
	// Woken by the deletion of an ephemeral instance, rather than polling.
	sub, unsub := in.m.events.subscribe(in.name)
	defer unsub()
	if err := in.StopWithin(ctx, grace); err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		op, err := in.m.c.DeleteInstance(in.name)
		if err == nil {
			err = incusop.Wait(ctx, op, in.m.c)
		}
		if err == nil || isGone(err) {
			in.m.log.Info("instance deleted", "name", in.name)
			return nil
		}
		// A server operation holding the instance (a start or device
		// update of a host killed mid-call, another delete this one was
		// made to wait for) ends on its own, and a start that raced the
		// stop is stopped again below: wait for either as long as ctx
		// allows; other failures get a few attempts.
		if ctx.Err() != nil || attempt >= 5 && !isBusy(err) && !isRunning(err) && !waitedForAnotherDelete(err) {
			return wrapErr(err, in.name, "delete")
		}
		// An ephemeral instance may be in the middle of deleting itself, or
		// a concurrent start may have raced the stop: look, and try again.
		st, serr := in.Status(ctx)
		switch {
		case errors.Is(serr, ErrNotFound):
			return nil
		case serr == nil && st != api.Stopped:
			if err := in.StopWithin(ctx, 0); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return wrapErr(err, in.name, "delete")
		case <-sub.ch:
		case <-time.After(in.m.cfg.PollInterval):
		}
	}
}

// changeState runs one state change and waits for it.
func (in *Instance) changeState(ctx context.Context, put api.InstanceStatePut) error {
	// The unbound client waits through the manager's shared event
	// connection; incusop.Wait cancels the operation when ctx ends.
	op, err := in.m.c.UpdateInstanceState(in.name, put, "")
	if err != nil {
		return err
	}
	return incusop.Wait(ctx, op, in.m.c)
}

func seconds(d time.Duration) int {
	return int(math.Ceil(d.Seconds()))
}

func sentinelOrNil(err error) error {
	if err == nil {
		return nil
	}
	return sentinelOf(err)
}

func isGone(err error) bool { return sentinelOrNil(err) == ErrNotFound || errors.Is(err, ErrNotFound) }

func isNotRunning(err error) bool {
	return errors.Is(err, ErrNotRunning) || sentinelOrNil(err) == ErrNotRunning
}

func isAlreadyRunning(err error) bool {
	return err != nil && containsFold(err.Error(), "already running")
}

// isBusy reports the server's refusal while another operation holds the
// instance's operation lock ("Instance is busy running a "update" operation").
func isBusy(err error) bool {
	return strings.Contains(err.Error(), "is busy running a")
}

// waitedForAnotherDelete tells incusd's answer to a delete that found
// another delete of the same instance under way and waited for it: "A
// matching non-reusable operation has now succeeded". incusd 6.0.4 gives it
// whether that delete succeeded or not (its lock is released without the
// outcome), so it says only to look again, like a busy refusal.
func waitedForAnotherDelete(err error) bool {
	return strings.Contains(err.Error(), "matching non-reusable operation has now succeeded")
}

// isRunning tells the server's refusal to delete an instance that is
// running: a start by another operation raced the stop before the delete.
func isRunning(err error) bool {
	return strings.Contains(err.Error(), "Instance is running")
}
