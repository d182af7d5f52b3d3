package instance

import (
	"errors"
	"testing"

	"github.com/matryer/is"
)

// TestUnreachableMemberIsUnavailable maps what a cluster answers for an
// instance on a member whose daemon is down onto ErrUnavailable (the texts
// are incusd's own: not ready, offline, and its forwarding failures).
func TestUnreachableMemberIsUnavailable(t *testing.T) {
	for _, msg := range []string{
		"Server isn't ready yet",
		"Missing event connection with target cluster member",
		"Target cluster member is offline",
		`Failed to connect to member member3: Get "https://127.0.0.4:8443/1.0": connection refused`,
		`Failed connecting to member "127.0.0.4:8443": dial tcp: connect: connection refused`,
		`Failed connecting to HTTP endpoint "127.0.0.4:8443": dial tcp 127.0.0.4:8443: connect: connection refused`,
	} {
		t.Run(msg, func(t *testing.T) {
			is := is.New(t)
			err := wrapErr(errors.New(msg), "c1", "status")
			is.True(errors.Is(err, ErrUnavailable))
		})
	}
	is.New(t).True(!errors.Is(wrapErr(errors.New("Invalid config"), "c1", "create"), ErrUnavailable))
}
