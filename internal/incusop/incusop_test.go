package incusop_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/incusexec/incusexec/internal/incusop"
	"github.com/lxc/incus/v6/shared/api"
	"github.com/matryer/is"
)

type slowOp struct {
	done chan struct{}
}

func (o *slowOp) WaitContext(ctx context.Context) error {
	select {
	case <-o.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (o *slowOp) Get() api.Operation { return api.Operation{ID: "op-1"} }

// canceller records the operations it was asked to cancel.
type canceller struct{ deleted []string }

func (c *canceller) DeleteOperation(id string) error { c.deleted = append(c.deleted, id); return nil }

func TestWaitCancelsOperationOnContextEnd(t *testing.T) {
	is := is.New(t)
	op := &slowOp{done: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	c := &canceller{}
	err := incusop.Wait(ctx, op, c)
	is.True(errors.Is(err, context.DeadlineExceeded))
	is.Equal(c.deleted, []string{"op-1"}) // cancelled on the server by its ID
}

func TestWaitReturnsWhenDone(t *testing.T) {
	is := is.New(t)
	op := &slowOp{done: make(chan struct{})}
	close(op.done)
	c := &canceller{}
	is.NoErr(incusop.Wait(context.Background(), op, c))
	is.Equal(len(c.deleted), 0)
}

func TestPollReportsLastSeen(t *testing.T) {
	is := is.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	n := 0
	err := incusop.Poll(ctx, time.Millisecond, func() (bool, string, error) {
		n++
		return false, "state STARTING", nil
	})
	is.True(errors.Is(err, context.DeadlineExceeded))
	is.True(n > 1)
	is.Equal(err.Error(), "context deadline exceeded (last seen: state STARTING)")
}

// deafOp waits like the v6 client does for a client made with SkipGetEvents:
// it never looks at the context's cancellation, only at its deadline, which
// it records.
type deafOp struct {
	done        chan struct{}
	hadDeadline chan bool
}

func (o *deafOp) WaitContext(ctx context.Context) error {
	_, ok := ctx.Deadline()
	o.hadDeadline <- ok
	<-o.done
	return nil
}

func (o *deafOp) Get() api.Operation { return api.Operation{ID: "op-2"} }

func TestWaitReturnsOnContextEndWhenTheOperationIgnoresIt(t *testing.T) {
	is := is.New(t)
	op := &deafOp{done: make(chan struct{}), hadDeadline: make(chan bool, 1)}
	defer close(op.done)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	c := &canceller{}
	err := incusop.Wait(ctx, op, c)
	is.True(errors.Is(err, context.DeadlineExceeded))
	is.Equal(c.deleted, []string{"op-2"})
	// The client turns a deadline into a whole-second server-side timeout
	// and reports success at 0 s for an operation still running: it must
	// never see one.
	is.Equal(<-op.hadDeadline, false)
}
