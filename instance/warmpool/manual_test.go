package warmpool_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/instance/warmpool"
	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/matryer/is"
)

func manualPool(t *testing.T, e env, name string, size int) *warmpool.Pool {
	t.Helper()
	p, err := warmpool.New(warmpool.Config{
		Name: name, Manager: e.m, Client: e.d.Client, Size: size, Manual: true,
		Spec: instance.Spec{Image: incustest.BusyboxAlias, Ephemeral: true, Ready: busyboxReady},
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestManualPoolFillDetachClaim: a manual pool creates nothing by itself;
// Fill makes Size ready instances, Detach leaves them on the server, and a
// pool of the same name opened later hands each out once, then reports
// ErrEmpty at once instead of waiting.
func TestManualPoolFillDetachClaim(t *testing.T) {
	is := is.New(t)
	e := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	name := incustest.UniqueName("man-")

	first := manualPool(t, e, name, 2)
	_, err := first.Claim(ctx)
	is.True(errors.Is(err, warmpool.ErrEmpty)) // nothing made in the background
	names, err := e.m.List(ctx)
	is.NoErr(err)
	is.Equal(len(names), 0)

	is.NoErr(first.Fill(ctx))
	is.NoErr(first.Fill(ctx)) // full already: creates nothing more
	first.Detach()
	is.True(errors.Is(first.Fill(ctx), warmpool.ErrClosed))
	names, err = e.m.List(ctx)
	is.NoErr(err)
	is.Equal(len(names), 2) // left on the server
	for _, n := range names {
		inst, _, err := e.d.Client.GetInstance(n)
		is.NoErr(err)
		is.Equal(inst.Config[warmpool.LabelState], warmpool.StateReady)
		is.Equal(inst.Config[warmpool.LabelClaimed], "")
	}

	second := manualPool(t, e, name, 2)
	got := map[string]bool{}
	for range 2 {
		in, err := second.Claim(ctx)
		is.NoErr(err)
		is.True(!got[in.Name()])
		got[in.Name()] = true
		st, err := in.Status(ctx)
		is.NoErr(err)
		is.Equal(st.String(), "Running")
	}
	_, err = second.Claim(ctx)
	is.True(errors.Is(err, warmpool.ErrEmpty))
	for n := range got {
		is.NoErr(e.m.Instance(n).Delete(ctx))
	}

	// Close deletes the unclaimed instances of a detached filler (here:
	// this process, so only once the pool made them itself).
	third := manualPool(t, e, name, 1)
	is.NoErr(third.Fill(ctx))
	is.NoErr(third.Close(ctx))
	names, err = e.m.List(ctx)
	is.NoErr(err)
	is.Equal(len(names), 0)
}

// TestCloseDiscards: with Config.Discard, Close leaves the pool's running
// ephemeral instances to the server (instance.Discard), which deletes
// them.
func TestCloseDiscards(t *testing.T) {
	is := is.New(t)
	e := setup(t)
	var logs syncBuffer
	m, err := instance.New(e.d.Client, instance.Config{Owner: e.m.Owner(), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	is.NoErr(err)
	defer m.Close()
	ctx := ctxFor(t, 3*time.Minute)
	p, err := warmpool.New(warmpool.Config{
		Name: incustest.UniqueName("disc-"), Manager: m, Client: e.d.Client, Size: 1, Manual: true, Discard: true,
		Spec: instance.Spec{Image: incustest.BusyboxAlias, Ephemeral: true, Ready: busyboxReady},
	})
	is.NoErr(err)
	is.NoErr(p.Fill(ctx))
	is.NoErr(p.Close(ctx))
	is.True(strings.Contains(logs.String(), "instance discarded")) // left to the server
	for {
		names, err := m.List(ctx)
		is.NoErr(err)
		if len(names) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("still there: %v", names)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
