package instance_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/instance"
	incus "github.com/lxc/incus/v6/client"
	"github.com/matryer/is"
)

// failingAfter yields n zero bytes, then fails, as a source read from the
// network or a full disk does part-way.
type failingAfter struct{ n int }

func (f *failingAfter) Read(p []byte) (int, error) {
	if f.n == 0 {
		return 0, errors.New("source broke")
	}
	k := min(len(p), f.n)
	clear(p[:k])
	f.n -= k
	return k, nil
}

// TestFailedPushLeavesNoPartialFile: a push that fails part-way removes what
// it wrote, so that a full disk gets its space back and nobody reads half a
// file as whole.
func TestFailedPushLeavesNoPartialFile(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	_, m, _ := setup(t, instance.Config{})
	in := launch(t, m, instance.Spec{})
	ctx := ctxFor(t, time.Minute)
	is.NoErr(in.Push(ctx, "/tmp/f", bytes.NewReader([]byte("old")), executor.FileOptions{}))
	err := in.Push(ctx, "/tmp/f", &failingAfter{n: 4 << 20}, executor.FileOptions{})
	is.True(err != nil)
	_, err = in.Pull(ctx, "/tmp/f", io.Discard)
	is.True(errors.Is(err, instance.ErrNotFound)) // no partial file left
}

// forkfileGone is the real client as incusd answers while the instance's
// file helper exits: the next file sessions cannot reach its socket.
type forkfileGone struct {
	instance.Client
	sftpRefusals atomic.Int32
}

var errForkfileGone = errors.New("dial unix /proc/self/fd/74/forkfile.sock: connect: no such file or directory")

func (f *forkfileGone) GetInstanceFileSFTPConn(name string) (net.Conn, error) {
	if f.sftpRefusals.Add(-1) >= 0 {
		return nil, errForkfileGone
	}
	return f.Client.GetInstanceFileSFTPConn(name)
}

// CreateInstanceFile (the plain endpoint Push falls back to) meets the same
// exiting helper.
func (f *forkfileGone) CreateInstanceFile(string, string, incus.InstanceFileArgs) error {
	return errForkfileGone
}

// TestPushOutlastsExitingFileHelper: a push opened while incusd's file
// helper exits (seen under load) succeeds once the helper is back.
func TestPushOutlastsExitingFileHelper(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	d, m, _ := setup(t, instance.Config{})
	in := launch(t, m, instance.Spec{})
	c := &forkfileGone{Client: d.Client}
	c.sftpRefusals.Store(2)
	m2, err := instance.New(c, instance.Config{Owner: m.Owner()})
	is.NoErr(err)
	defer m2.Close()
	ctx := ctxFor(t, time.Minute)
	is.NoErr(m2.Instance(in.Name()).Push(ctx, "/root/pushed", strings.NewReader("after the helper came back"), executor.FileOptions{}))
	var out bytes.Buffer
	_, err = in.Pull(ctx, "/root/pushed", &out)
	is.NoErr(err)
	is.Equal(out.String(), "after the helper came back")
}
