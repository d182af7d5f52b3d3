package instance

import (
	"errors"
	"testing"

	"github.com/matryer/is"
)

// TestForkfileGoneCoversBothHandshakeFailures: both ways incusd's exiting
// file helper fails a new SFTP session are retried, and nothing else is
// (a failure after the handshake may have moved bytes).
func TestForkfileGoneCoversBothHandshakeFailures(t *testing.T) {
	is := is.New(t)
	is.True(isForkfileGone(errors.New(`dial unix /var/lib/incus/containers/c1/forkfile.sock: connect: no such file or directory`)))
	is.True(isForkfileGone(errors.New(`error receiving version packet from server: server unexpectedly closed connection: unexpected EOF`)))
	is.True(!isForkfileGone(errors.New(`sftp: "Permission denied" (SSH_FX_PERMISSION_DENIED)`)))
	is.True(!isForkfileGone(errors.New(`unexpected EOF`)))
}
