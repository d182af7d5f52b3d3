package instance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/internal/incusop"
	"github.com/lxc/incus/v6/shared/api"
)

// Ready says when an instance counts as ready; the host picks what fits its
// image. Every condition set must hold; the zero Ready waits only for the
// instance to be running.
type Ready struct {
	// Systemd waits until `systemctl is-system-running` reports running,
	// degraded or maintenance.
	Systemd bool
	// NIC waits until the named interface (as the instance sees it, e.g.
	// "eth0") has a global address of Family.
	NIC string
	// Family is "inet" (IPv4), "inet6" (IPv6) or "" for either.
	Family string
	// Agent waits until the VM agent answers (containers have none and pass
	// at once).
	Agent bool
	// Probe is the host's own test, called until it reports ready or fails;
	// seen describes the state for the timeout error.
	Probe func(ctx context.Context, in *Instance) (ready bool, seen string, err error)
	// Timeout bounds the wait (ctx alone when zero).
	Timeout time.Duration
}

func (r Ready) isZero() bool {
	return !r.Systemd && r.NIC == "" && !r.Agent && r.Probe == nil
}

// WaitReady waits until the instance is ready by r. It polls every
// PollInterval and wakes early on the instance's lifecycle events. It fails
// at once when the instance stops; when time runs out (r.Timeout or ctx's
// deadline) the error wraps ErrTimeout and says what was last seen.
func (in *Instance) WaitReady(ctx context.Context, r Ready) error {
	switch r.Family {
	case "", "inet", "inet6":
	default:
		return fmt.Errorf("%w: address family %q (want inet, inet6 or empty)", ErrInvalid, r.Family)
	}
	if r.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, r.Timeout, fmt.Errorf("%w after %s", ErrTimeout, r.Timeout))
		defer cancel()
	}
	sub, unsub := in.m.events.subscribe(in.name)
	defer unsub()
	w := &readyWait{in: in, ctx: ctx, sub: sub}
	stages := []struct {
		what  string
		check func() (bool, string, error)
	}{
		{"running", w.running},
		{"agent", w.agent},
		// systemd before the network: its wait is one exec that blocks
		// inside the instance until the boot's job queue is done, while
		// the network check is a state request per poll, each of which
		// costs the server (and the booting instance) CPU. A boot that
		// waits for the network (the image generator's does) has the
		// address by the time systemd is up, and one request then finds it.
		{"systemd", w.systemd},
		{"network", func() (bool, string, error) { return w.nic(r.NIC, r.Family) }},
		{"probe", func() (bool, string, error) { return r.Probe(ctx, in) }},
	}
	want := map[string]bool{"running": true, "agent": r.Agent, "network": r.NIC != "", "systemd": r.Systemd, "probe": r.Probe != nil}
	start := time.Now()
	for _, s := range stages {
		if !want[s.what] {
			continue
		}
		if err := w.loop(s.what, s.check); err != nil {
			return err
		}
	}
	in.m.log.Debug("instance ready", "name", in.name, "after", time.Since(start))
	return nil
}

type readyWait struct {
	in   *Instance
	ctx  context.Context
	sub  *subscription
	seen string
}

// loop calls check until it is done, fails, or the context ends.
func (w *readyWait) loop(stage string, check func() (bool, string, error)) error {
	t := time.NewTicker(w.in.m.cfg.PollInterval)
	defer t.Stop()
	for {
		done, seen, err := check()
		if seen != "" {
			w.seen = seen
		}
		if err != nil {
			if w.ctx.Err() != nil {
				return w.timeout(stage)
			}
			return fmt.Errorf("instance %s: waiting for %s: %w", w.in.name, stage, err)
		}
		if done {
			return nil
		}
		select {
		case <-w.ctx.Done():
			return w.timeout(stage)
		case <-w.sub.ch:
		case <-t.C:
		}
	}
}

func (w *readyWait) timeout(stage string) error {
	cause := context.Cause(w.ctx)
	seen := w.seen
	if seen == "" {
		seen = "nothing"
	}
	if errors.Is(cause, ErrTimeout) || errors.Is(cause, context.DeadlineExceeded) {
		if errors.Is(cause, ErrTimeout) {
			return fmt.Errorf("instance %s: not ready (%s): %w (last seen: %s)", w.in.name, stage, cause, seen)
		}
		return fmt.Errorf("instance %s: not ready (%s): %w (last seen: %s): %w", w.in.name, stage, ErrTimeout, seen, cause)
	}
	return fmt.Errorf("instance %s: waiting for %s (last seen: %s): %w", w.in.name, stage, seen, cause)
}

func (w *readyWait) running() (bool, string, error) {
	inst, _, err := incusop.Bind(w.ctx, w.in.m.c).GetInstance(w.in.name)
	if err != nil {
		return false, "", goneWhileWaiting(wrapErr(err, w.in.name, "get"))
	}
	switch inst.StatusCode {
	case api.Running:
		return true, "", nil
	case api.Stopped, api.Error:
		return false, "", fmt.Errorf("%w (status %s)", ErrNotRunning, inst.Status)
	}
	return false, "status " + inst.Status, nil
}

func (w *readyWait) state() (*api.InstanceState, error) {
	st, _, err := incusop.Bind(w.ctx, w.in.m.c).GetInstanceState(w.in.name)
	if err != nil {
		return nil, goneWhileWaiting(wrapErr(err, w.in.name, "get state"))
	}
	if st.StatusCode == api.Stopped || st.StatusCode == api.Error {
		return nil, fmt.Errorf("%w (status %s)", ErrNotRunning, st.Status)
	}
	return st, nil
}

// goneWhileWaiting makes an instance that vanished during the wait (an
// ephemeral one is deleted by the server when it stops: its init exited)
// not running as well as not found.
func goneWhileWaiting(err error) error {
	if isGone(err) {
		return fmt.Errorf("%w (gone: an ephemeral instance is deleted when it stops): %w", ErrNotRunning, err)
	}
	return err
}

func (w *readyWait) agent() (bool, string, error) {
	inst, _, err := incusop.Bind(w.ctx, w.in.m.c).GetInstance(w.in.name)
	if err != nil {
		return false, "", goneWhileWaiting(wrapErr(err, w.in.name, "get"))
	}
	if inst.Type != string(api.InstanceTypeVM) {
		return true, "", nil
	}
	st, err := w.state()
	if err != nil {
		return false, "", err
	}
	// The server counts processes through the agent: -1 means no answer.
	if st.Processes > 0 {
		return true, "", nil
	}
	return false, fmt.Sprintf("VM agent not answering (processes %d)", st.Processes), nil
}

func (w *readyWait) nic(name, family string) (bool, string, error) {
	st, err := w.state()
	if err != nil {
		return false, "", err
	}
	n, ok := st.Network[name]
	if !ok {
		names := make([]string, 0, len(st.Network))
		for k := range st.Network {
			names = append(names, k)
		}
		slices.Sort(names)
		return false, fmt.Sprintf("no interface %s (have %s)", name, strings.Join(names, ", ")), nil
	}
	var addrs []string
	for _, a := range n.Addresses {
		addrs = append(addrs, a.Family+" "+a.Address+"/"+a.Netmask+" "+a.Scope)
		if a.Scope == "global" && (family == "" || a.Family == family) {
			return true, "", nil
		}
	}
	return false, fmt.Sprintf("%s %s, addresses [%s]", name, n.State, strings.Join(addrs, "; ")), nil
}

// systemdWait waits inside the instance for systemd's private socket (an
// exec per try would compete with the boot for the CPU) and then has
// systemctl wait for the end of the boot, so that one exec usually covers
// the whole wait.
const systemdWait = `while ! test -S /run/systemd/private; do sleep 0.05; done; exec systemctl is-system-running --wait`

// systemd runs systemdWait, again while systemd is not far enough up to
// answer.
func (w *readyWait) systemd() (bool, string, error) {
	var out, errb bytes.Buffer
	code, err := w.in.Exec(w.ctx, executor.Cmd{
		Args:      []string{"sh", "-c", systemdWait},
		Stdout:    &out,
		Stderr:    &errb,
		KillGrace: time.Second,
		// The websocket path is cheaper, and what it can lose here costs
		// one more try: a state lost to incusd's output race reads as
		// "not answering", and the next exec answers at once.
		Stream: true,
	})
	state := strings.TrimSpace(out.String())
	if err != nil {
		if isNotRunning(err) {
			return false, "", err
		}
		if w.ctx.Err() != nil {
			return false, "systemd " + state, err
		}
		return false, "", err
	}
	switch {
	case code == 127 || code == 126:
		return false, "", fmt.Errorf("%w: systemctl cannot run in the instance (exit %d): %s", ErrExec, code, strings.TrimSpace(errb.String()))
	case state == "running", state == "degraded", state == "maintenance":
		return true, "", nil
	case state == "":
		return false, "systemd not answering: " + strings.TrimSpace(errb.String()), nil
	}
	return false, "systemd " + state, nil
}
