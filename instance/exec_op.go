package instance

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	incus "github.com/lxc/incus/v6/client"
	"github.com/lxc/incus/v6/shared/api"
)

// rawAPI is what recorded execs need beyond Client: the raw API, because
// the client's own record-output handling (ExecInstance with RecordOutput)
// deletes the stdout file twice and never fetches stderr correctly. Its
// operations are started and awaited by plain requests: the client's
// operation wrapper sets up an event listener, and v6.23 reads its
// skipEvents flag without a lock. The real client has these methods; a fake
// without them gets the websocket path.
type rawAPI interface {
	RawQuery(method, path string, data any, etag string) (*api.Response, string, error)
	DoHTTP(req *http.Request) (*http.Response, error)
	GetConnectionInfo() (*incus.ConnectionInfo, error)
	HasExtension(name string) bool
}

// rawServer addresses one client's server and project.
type rawServer struct {
	raw     rawAPI
	url     string // the server's URL, for DoHTTP
	project string
}

func newRawServer(raw rawAPI) (*rawServer, error) {
	info, err := raw.GetConnectionInfo()
	if err != nil {
		return nil, err
	}
	return &rawServer{raw: raw, url: strings.TrimSuffix(info.URL, "/"), project: info.Project}, nil
}

// path adds the project to an API path (which starts with /1.0).
func (s *rawServer) path(p string) string {
	if s.project == "" {
		return p
	}
	sep := "?"
	if strings.Contains(p, "?") {
		sep = "&"
	}
	return p + sep + "project=" + url.QueryEscape(s.project)
}

// startExec posts an exec request and returns its operation's id.
func (s *rawServer) startExec(instance string, req api.InstanceExecPost) (string, error) {
	resp, _, err := s.raw.RawQuery(http.MethodPost, s.path("/1.0/instances/"+url.PathEscape(instance)+"/exec"), req, "")
	if err != nil {
		return "", err
	}
	op, err := resp.MetadataAsOperation()
	if err != nil {
		return "", err
	}
	return op.ID, nil
}

// opWaitSecs bounds each long poll of waitOp (a variable for tests).
var opWaitSecs = 30

// waitOp waits for an operation to end and returns it; a failed operation
// is returned with its error.
func (s *rawServer) waitOp(ctx context.Context, id string) (*api.Operation, error) {
	for {
		op, err := s.waitOpOnce(ctx, id, opWaitSecs)
		if err != nil {
			// A poll that timed out is an error on some releases: the
			// operation's own state says whether it has ended.
			if ctx.Err() != nil {
				return nil, err
			}
			if op, err = s.getOp(ctx, id); err != nil {
				return nil, err
			}
		}
		switch op.StatusCode {
		case api.Success:
			return op, nil
		case api.Failure, api.Cancelled:
			return op, api.StatusErrorf(http.StatusBadRequest, "%s", op.Err)
		}
	}
}

func (s *rawServer) getOp(ctx context.Context, id string) (*api.Operation, error) {
	return s.opRequest(ctx, id, fmt.Sprintf("/1.0/operations/%s", url.PathEscape(id)))
}

func (s *rawServer) waitOpOnce(ctx context.Context, id string, timeoutSecs int) (*api.Operation, error) {
	return s.opRequest(ctx, id, fmt.Sprintf("/1.0/operations/%s/wait?timeout=%d", url.PathEscape(id), timeoutSecs))
}

func (s *rawServer) opRequest(ctx context.Context, id, path string) (*api.Operation, error) {
	u := s.url + s.path(path)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.raw.DoHTTP(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r api.Response
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&r); err != nil {
		return nil, fmt.Errorf("operation %s: %s: %w", id, resp.Status, err)
	}
	if r.Type == api.ErrorResponse {
		return nil, api.StatusErrorf(r.Code, "%s", r.Error)
	}
	var op api.Operation
	if err := r.MetadataAsStruct(&op); err != nil {
		return nil, fmt.Errorf("operation %s: %w", id, err)
	}
	return &op, nil
}
