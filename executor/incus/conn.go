package incus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	incusclient "github.com/lxc/incus/v6/client"
)

// DefaultReconnect is how long requests wait for a daemon that does not
// answer (restarting, say) when Config.Reconnect is zero.
const DefaultReconnect = 30 * time.Second

// reconnecting makes c wait for a restarting daemon: a connection refused
// (or a socket missing while the daemon restarts) is dialled again, and a
// GET or HEAD request that lost its connection is sent again, with growing
// pauses for up to limit or until the request's context ends. Requests
// that may have reached the daemon are never repeated, except those two
// idempotent methods.
func reconnecting(c incusclient.InstanceServer, limit time.Duration, log *slog.Logger) {
	hc, err := c.GetHTTPClient()
	if err != nil {
		return
	}
	t, ok := hc.Transport.(*http.Transport)
	if !ok {
		return
	}
	if t.DialContext != nil {
		t.DialContext = retryDial(t.DialContext, limit, log)
	}
	if t.DialTLSContext != nil {
		t.DialTLSContext = retryDial(t.DialTLSContext, limit, log)
	}
	hc.Transport = &retryTransport{t: t, limit: limit, log: log}
}

type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// refused reports whether err means that nothing listens (yet) where the
// daemon should.
func refused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EHOSTUNREACH)
}

func retryDial(dial dialFunc, limit time.Duration, log *slog.Logger) dialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var conn net.Conn
		err := retry(ctx, limit, func() (bool, error) {
			var err error
			conn, err = dial(ctx, network, addr)
			return err != nil && refused(err), err
		}, log)
		return conn, err
	}
}

// retry calls try until it reports no retry, pausing 50 ms, then longer,
// up to 1 s, between calls, for at most limit or until ctx ends.
func retry(ctx context.Context, limit time.Duration, try func() (again bool, err error), log *slog.Logger) error {
	deadline := time.Now().Add(limit)
	pause := 50 * time.Millisecond
	for n := 0; ; n++ {
		again, err := try()
		if !again || time.Now().Add(pause).After(deadline) {
			if n > 0 && err == nil {
				log.Info("incus daemon answers again", "attempts", n+1)
			}
			return err
		}
		if n == 0 {
			log.Warn("incus daemon does not answer; retrying", "err", err, "for", limit)
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(pause):
		}
		pause = min(2*pause, time.Second)
	}
}

// retryTransport sends GET and HEAD requests again when their connection
// broke, and any request that a shutting-down daemon refused; dial failures
// are retried by the dialer for every method.
type retryTransport struct {
	t     *http.Transport
	limit time.Duration
	log   *slog.Logger
}

// Transport returns the wrapped transport (incusclient.HTTPTransporter).
func (r *retryTransport) Transport() *http.Transport { return r.t }

func (r *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	idempotent := req.Method == http.MethodGet || req.Method == http.MethodHead
	resendable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	var resp *http.Response
	err := retry(req.Context(), r.limit, func() (bool, error) {
		if resp != nil && req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				return false, err
			}
			req.Body = body
		}
		var err error
		resp, err = r.t.RoundTrip(req)
		switch {
		case err != nil:
			return idempotent && req.Context().Err() == nil && (refused(err) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)), err
		case resendable && goingDown(resp):
			return true, fmt.Errorf("%w (HTTP %d)", errGoingDown, resp.StatusCode)
		}
		return false, nil
	}, r.log)
	if errors.Is(err, errGoingDown) {
		// Out of time: hand back the daemon's own answer.
		return resp, nil
	}
	return resp, err
}

// goingDown reports whether resp is a daemon's refusal while it shuts down
// (it did nothing: the request may be sent again). It leaves resp's body
// readable.
func goingDown(resp *http.Response) bool {
	if resp.StatusCode != http.StatusInternalServerError && resp.StatusCode != http.StatusServiceUnavailable {
		return false
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	s := strings.ToLower(string(b))
	return strings.Contains(s, "database is closed") || strings.Contains(s, "shutting down")
}

var errGoingDown = errors.New("incus daemon going down")
