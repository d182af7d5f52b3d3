package instance

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/incusexec/incusexec/executor"
	"github.com/lxc/incus/v6/shared/api"
)

// Sentinel errors, for errors.Is. Errors from the server wrap both the
// sentinel and the Incus status error.
var (
	// ErrNotFound: the instance (or a file in it) does not exist.
	ErrNotFound = executor.Sentinel("not found", executor.ErrNotFound)
	// ErrNotRunning: the instance must be running for this.
	ErrNotRunning = executor.Sentinel("instance not running", executor.ErrNotRunning)
	// ErrAlreadyExists: an instance of that name exists.
	ErrAlreadyExists = executor.Sentinel("already exists", executor.ErrAlreadyExists)
	// ErrTimeout: a wait or a command ran out of time.
	ErrTimeout = executor.Sentinel("timed out", executor.ErrTimeout)
	// ErrExec: a command could not be run, or its outcome is unknown.
	ErrExec = errors.New("exec failed")
	// ErrInvalid: bad input (name, path, user, options).
	ErrInvalid = executor.Sentinel("invalid argument", executor.ErrInvalid)
	// ErrUser: the user a command should run as cannot be found or created.
	ErrUser = errors.New("cannot provide user")
	// ErrUnavailable: the server, or the cluster member hosting the
	// instance, does not answer (its daemon is down or not ready), or it
	// has the instance's network out of service.
	ErrUnavailable = executor.Sentinel("server unavailable", executor.ErrUnavailable)
)

// wrapErr maps an error from the Incus client onto the sentinels and names
// the instance and the action. nil stays nil.
func wrapErr(err error, name, action string) error {
	if err == nil {
		return nil
	}
	if s := sentinelOf(err); s != nil && !errors.Is(err, s) {
		return fmt.Errorf("instance %s: %s: %w: %w", name, action, s, err)
	}
	return fmt.Errorf("instance %s: %s: %w", name, action, err)
}

func sentinelOf(err error) error {
	switch {
	case api.StatusErrorCheck(err, http.StatusNotFound):
		return ErrNotFound
	case api.StatusErrorCheck(err, http.StatusConflict):
		return ErrAlreadyExists
	case api.StatusErrorCheck(err, http.StatusServiceUnavailable):
		return ErrUnavailable
	}
	msg := strings.ToLower(err.Error())
	switch {
	case isNetworkUnavailable(err):
		return ErrUnavailable
	case strings.Contains(msg, "not running"), strings.Contains(msg, "is stopped"), strings.Contains(msg, "already stopped"):
		return ErrNotRunning
	case strings.Contains(msg, "already exists"), strings.Contains(msg, "unique constraint failed"):
		return ErrAlreadyExists
	case strings.Contains(msg, "not found"), strings.Contains(msg, "doesn't exist"), strings.Contains(msg, "does not exist"):
		return ErrNotFound
	case strings.Contains(msg, "server isn't ready yet"), strings.Contains(msg, "member is offline"),
		strings.Contains(msg, "missing event connection with target cluster member"),
		// incusd forwarding to a member whose daemon is down.
		strings.Contains(msg, "failed to connect to member"), strings.Contains(msg, "failed connecting to member"),
		strings.Contains(msg, "failed connecting to http endpoint"):
		// What a cluster answers for an instance on a member that is down.
		return ErrUnavailable
	}
	return nil
}

func isNotFound(err error) bool { return errors.Is(err, ErrNotFound) || sentinelOf(err) == ErrNotFound }

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}
