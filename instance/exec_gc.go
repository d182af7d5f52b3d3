package instance

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/lxc/incus/v6/shared/api"
)

// execLeftoverAge is how long after its last write a recorded exec's file
// whose operation has ended may still be read by the exec that made it;
// older ones were left by a host that died (a variable for tests).
var execLeftoverAge = time.Minute

// sweepExecOutput removes the recorded-output files that hosts killed in
// the middle of an exec left on the instances named (GC calls it for the
// ones it keeps; deleting an instance deletes its files). A file is left
// alone while its exec's operation runs, or until execLeftoverAge after its
// last write. Failures are logged: they cost disk space, not correctness.
func (m *Manager) sweepExecOutput(ctx context.Context, names []string) {
	raw, ok := m.c.(rawAPI)
	if !ok || !raw.HasExtension("container_exec_recording") {
		return
	}
	srv, err := newRawServer(raw)
	if err != nil {
		return
	}
	for _, name := range names {
		if ctx.Err() != nil {
			return
		}
		n, err := srv.sweepInstance(ctx, name)
		if err != nil {
			m.log.Warn("gc: recorded exec output", "name", name, "err", err)
		}
		if n > 0 {
			m.log.Info("gc: removed recorded exec output left by a dead host", "name", name, "files", n)
		}
	}
}

func (s *rawServer) sweepInstance(ctx context.Context, name string) (int, error) {
	files, err := s.execOutputFiles(name)
	if err != nil {
		return 0, err
	}
	removed := 0
	for _, f := range files {
		if ctx.Err() != nil {
			return removed, ctx.Err()
		}
		stale, err := s.staleExecOutput(ctx, f)
		if err != nil {
			return removed, err
		}
		if !stale {
			continue
		}
		if _, _, err := s.raw.RawQuery(http.MethodDelete, s.path(f), nil, ""); err != nil && !api.StatusErrorCheck(err, http.StatusNotFound) {
			return removed, fmt.Errorf("delete %s: %w", path.Base(f), err)
		}
		removed++
	}
	return removed, nil
}

// execOutputFiles lists the instance's exec-output files (API paths); none
// when no exec ever recorded output there.
func (s *rawServer) execOutputFiles(name string) ([]string, error) {
	resp, _, err := s.raw.RawQuery(http.MethodGet, s.path("/1.0/instances/"+url.PathEscape(name)+"/logs/exec-output"), nil, "")
	if err != nil {
		if api.StatusErrorCheck(err, http.StatusNotFound) || containsFold(err.Error(), "no such file") {
			return nil, nil
		}
		return nil, err
	}
	var files []string
	if err := resp.MetadataAsStruct(&files); err != nil {
		return nil, err
	}
	return files, nil
}

// staleExecOutput reports whether no exec can still want the file f.
func (s *rawServer) staleExecOutput(ctx context.Context, f string) (bool, error) {
	id := strings.TrimPrefix(path.Base(f), "exec_")
	id = strings.TrimSuffix(strings.TrimSuffix(id, ".stdout"), ".stderr")
	op, err := s.getOp(ctx, id)
	switch {
	case err == nil && !op.StatusCode.IsFinal():
		return false, nil
	case err != nil && !api.StatusErrorCheck(err, http.StatusNotFound):
		return false, err
	}
	// incusd answers HEAD with 501: a GET's headers, body unread.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url+s.path(f), nil)
	if err != nil {
		return false, err
	}
	resp, err := s.raw.DoHTTP(req)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return false, nil
	}
	modified, err := http.ParseTime(resp.Header.Get("Last-Modified"))
	if err != nil {
		return false, fmt.Errorf("%s: no usable Last-Modified (%s): %w", path.Base(f), resp.Status, err)
	}
	return time.Since(modified) > execLeftoverAge, nil
}
