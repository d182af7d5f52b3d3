package executor

import (
	"errors"

	"github.com/incusexec/incusexec/imagebuild"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/mount"
	"github.com/incusexec/incusexec/netbridge"
)

// partSentinels maps the parts' sentinels onto this package's.
var partSentinels = []struct{ part, ours error }{
	{instance.ErrNotFound, ErrNotFound},
	{instance.ErrNotRunning, ErrNotRunning},
	{instance.ErrAlreadyExists, ErrAlreadyExists},
	{instance.ErrTimeout, ErrTimeout},
	{instance.ErrInvalid, ErrInvalid},
	{instance.ErrUnavailable, ErrUnavailable},
	{mount.ErrNotFound, ErrNotFound},
	{mount.ErrNotAllowed, ErrNotAllowed},
	{mount.ErrInvalid, ErrInvalid},
	{mount.ErrNotHeld, ErrNotMounted},
	{mount.ErrInUse, ErrAlreadyExists},
	// The source is as unusable as one missing on this host (ErrNotAllowed).
	{mount.ErrSourceMissing, ErrNotAllowed},
	// A source nobody in the instance could read is refused, not attached.
	{mount.ErrUnreadable, ErrNotAllowed},
	{imagebuild.ErrNotFound, ErrNotFound},
	{imagebuild.ErrBadSource, ErrInvalid},
	{netbridge.ErrInvalid, ErrInvalid},
}

// unmappedSentinels are the parts' sentinels that have no counterpart here,
// on purpose. Every exported sentinel of instance and mount is either in
// partSentinels or here (TestEverySentinelMapped).
var unmappedSentinels = []error{
	// A command that could not be run, or whose outcome is unknown, is the
	// error of Exec itself; hosts read its message, there is no executor
	// sentinel to test for.
	instance.ErrExec,
	// A user that is missing also wraps instance.ErrNotFound (mapped above);
	// alone, ErrUser means creating the user failed, which is no bad input
	// of the host's and no state of the instance.
	instance.ErrUser,
	// The Reaper is the host's own, used beside the executor, never through
	// it: nothing an executor call returns wraps ErrReaperClosed.
	instance.ErrReaperClosed,
}

// mapped is an error of a part that also wraps the matching sentinel of
// this package, with the part's message unchanged.
type mapped struct {
	err, sentinel error
}

func (m *mapped) Error() string   { return m.err.Error() }
func (m *mapped) Unwrap() []error { return []error{m.err, m.sentinel} }

// mapErr makes err of a part also wrap this package's sentinel, so that
// hosts test one set of sentinels whatever the backend.
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	for _, s := range partSentinels {
		if errors.Is(err, s.part) {
			if errors.Is(err, s.ours) {
				return err
			}
			return &mapped{err: err, sentinel: s.ours}
		}
	}
	return err
}
