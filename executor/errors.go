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
	{mount.ErrNotFound, ErrNotFound},
	{mount.ErrNotAllowed, ErrNotAllowed},
	{mount.ErrInvalid, ErrInvalid},
	{mount.ErrNotHeld, ErrNotMounted},
	{mount.ErrInUse, ErrAlreadyExists},
	{imagebuild.ErrNotFound, ErrNotFound},
	{imagebuild.ErrBadSource, ErrInvalid},
	{netbridge.ErrInvalid, ErrInvalid},
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
