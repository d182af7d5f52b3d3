package incus_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/imagebuild"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/mount"
	"github.com/incusexec/incusexec/netbridge"
	"github.com/matryer/is"
)

// The mapping the backend once kept as a table (mapErr) now holds by
// construction: an error of a part, wrapped as the parts wrap them, is
// both the part's sentinel and the executor's, with its message unchanged.
func TestPartErrorsKeepBothSentinels(t *testing.T) {
	for _, s := range []struct{ part, ours error }{
		{instance.ErrNotFound, executor.ErrNotFound},
		{instance.ErrNotRunning, executor.ErrNotRunning},
		{instance.ErrAlreadyExists, executor.ErrAlreadyExists},
		{instance.ErrTimeout, executor.ErrTimeout},
		{instance.ErrInvalid, executor.ErrInvalid},
		{instance.ErrUnavailable, executor.ErrUnavailable},
		{mount.ErrNotFound, executor.ErrNotFound},
		{mount.ErrNotAllowed, executor.ErrNotAllowed},
		{mount.ErrInvalid, executor.ErrInvalid},
		{mount.ErrNotHeld, executor.ErrNotMounted},
		{mount.ErrInUse, executor.ErrAlreadyExists},
		{mount.ErrSourceMissing, executor.ErrNotAllowed},
		{mount.ErrUnreadable, executor.ErrNotAllowed},
		{imagebuild.ErrNotFound, executor.ErrNotFound},
		{imagebuild.ErrBadSource, executor.ErrInvalid},
		{netbridge.ErrInvalid, executor.ErrInvalid},
	} {
		err := fmt.Errorf("instance x: %w", s.part)
		if !errors.Is(err, s.part) || !errors.Is(err, s.ours) || err.Error() != "instance x: "+s.part.Error() {
			t.Errorf("%v = %v; want it to wrap %v and %v with the message unchanged", s.part, err, s.part, s.ours)
		}
	}
	plain := errors.New("plain")
	for _, ours := range []error{executor.ErrNotFound, executor.ErrInvalid, executor.ErrUnavailable} {
		if errors.Is(plain, ours) {
			t.Errorf("an error of no part is %v", ours)
		}
	}
}

// A cluster member that is down (instance.ErrUnavailable) is
// executor.ErrUnavailable for a host.
func TestUnavailableIsExecutorUnavailable(t *testing.T) {
	is := is.New(t)
	err := fmt.Errorf("instance ie-1 on member m2: %w", instance.ErrUnavailable)
	is.True(errors.Is(err, executor.ErrUnavailable))
	is.True(errors.Is(err, instance.ErrUnavailable))
	is.Equal(err.Error(), "instance ie-1 on member m2: server unavailable")
}
