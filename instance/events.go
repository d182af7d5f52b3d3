package instance

import (
	"encoding/json"
	"log/slog"
	"strings"
	"sync"

	"github.com/incusexec/incusexec/internal/incusop"
	incus "github.com/lxc/incus/v6/client"
	"github.com/lxc/incus/v6/shared/api"
)

// eventHub shares one lifecycle event listener among all waits of a
// Manager and routes events by instance name. Events only wake waiters
// early; every wait also polls, so a hub without a listener (the server or a
// fake refused it) still works.
type eventHub struct {
	c   Client
	log *slog.Logger

	mu       sync.Mutex
	listener *incus.EventListener
	subs     map[string]map[*subscription]struct{}
	closed   bool
}

type subscription struct {
	name string
	ch   chan string // lifecycle actions, dropped when full
}

func newEventHub(c Client, log *slog.Logger) *eventHub {
	return &eventHub{c: c, log: log, subs: map[string]map[*subscription]struct{}{}}
}

// connect makes sure the listener is up.
func (h *eventHub) connect() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.closed {
		h.ensureListener()
	}
}

// subscribe returns a subscription to the lifecycle actions
// ("instance-stopped", ...) of instance name, and its cancel function.
func (h *eventHub) subscribe(name string) (*subscription, func()) {
	s := &subscription{name: name, ch: make(chan string, 16)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return s, func() {}
	}
	h.ensureListener()
	if h.subs[name] == nil {
		h.subs[name] = map[*subscription]struct{}{}
	}
	h.subs[name][s] = struct{}{}
	return s, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.subs[name], s)
		if len(h.subs[name]) == 0 {
			delete(h.subs, name)
		}
	}
}

// ensureListener (re)connects the listener when there is none or it died.
// Called with h.mu held.
func (h *eventHub) ensureListener() {
	if h.listener != nil && h.listener.IsActive() {
		return
	}
	l, err := incusop.Events(h.c, api.EventTypeLifecycle)
	if err != nil {
		h.log.Debug("no event listener; polling only", "err", err)
		h.listener = nil
		return
	}
	if _, err := l.AddHandler([]string{api.EventTypeLifecycle}, h.dispatch); err != nil {
		l.Disconnect()
		h.listener = nil
		return
	}
	h.listener = l
}

func (h *eventHub) dispatch(e api.Event) {
	var lc api.EventLifecycle
	if err := json.Unmarshal(e.Metadata, &lc); err != nil {
		return
	}
	name := instanceOfSource(lc.Source)
	if name == "" {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs[name] {
		select {
		case s.ch <- lc.Action:
		default:
		}
	}
}

// instanceOfSource returns the instance name in a lifecycle source such as
// "/1.0/instances/foo" (with an optional query), or "".
func instanceOfSource(src string) string {
	const p = "/1.0/instances/"
	if len(src) <= len(p) || src[:len(p)] != p {
		return ""
	}
	rest, _, _ := strings.Cut(src[len(p):], "?")
	if strings.Contains(rest, "/") {
		return ""
	}
	return rest
}

func (h *eventHub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	if h.listener != nil {
		h.listener.Disconnect()
		h.listener = nil
	}
}
