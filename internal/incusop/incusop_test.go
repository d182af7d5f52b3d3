package incusop_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/incusexec/incusexec/internal/incusop"
	"github.com/matryer/is"
)

type slowOp struct {
	done      chan struct{}
	cancelled bool
}

func (o *slowOp) WaitContext(ctx context.Context) error {
	select {
	case <-o.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (o *slowOp) Cancel() error { o.cancelled = true; return nil }

func TestWaitCancelsOperationOnContextEnd(t *testing.T) {
	is := is.New(t)
	op := &slowOp{done: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	err := incusop.Wait(ctx, op)
	is.True(errors.Is(err, context.DeadlineExceeded))
	is.True(op.cancelled)
}

func TestWaitReturnsWhenDone(t *testing.T) {
	is := is.New(t)
	op := &slowOp{done: make(chan struct{})}
	close(op.done)
	is.NoErr(incusop.Wait(context.Background(), op))
	is.True(!op.cancelled)
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
