package imagebuild

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/incusexec/incusexec/internal/incusop"
	"golang.org/x/sync/singleflight"
)

// shareImport runs importAlias once for the goroutines of this Importer that
// import alias at the same time: the first caller's importAlias runs, under
// the first caller's ctx, and the callers that join it get its image marked
// Reused. A caller that joined stops waiting when its own ctx ends; the
// caller whose importAlias runs waits for it to return, so that an import
// it started has cleaned up by the time it returns.
func (im *Importer) shareImport(ctx context.Context, alias string, importAlias func() (Image, error)) (Image, error) {
	// The group runs importAlias on a goroutine of its own, possibly after
	// ctx has ended and this caller has gone: ran and abandoned, settled
	// under mu, say whether it is this caller's import that runs.
	var (
		mu             sync.Mutex
		ran, abandoned bool
	)
	results := im.imports.DoChan(alias, func() (any, error) {
		mu.Lock()
		if abandoned {
			mu.Unlock()
			return Image{}, fmt.Errorf("import %s: %w", alias, context.Cause(ctx))
		}
		ran = true
		mu.Unlock()
		return importAlias()
	})
	var r singleflight.Result
	select {
	case r = <-results:
	case <-ctx.Done():
		mu.Lock()
		abandoned = !ran
		mu.Unlock()
		if abandoned {
			return Image{}, fmt.Errorf("import %s: %w", alias, context.Cause(ctx))
		}
		r = <-results
	}
	if r.Err != nil {
		return Image{}, r.Err
	}
	img := r.Val.(Image)
	mu.Lock()
	img.Reused = img.Reused || !ran
	mu.Unlock()
	return img, nil
}

// lock takes the cross-process lock of alias on this Importer's server, so
// that processes on this host importing the same artifact import it once:
// the second finds the alias the first created. The lock file is named after
// the server's certificate (unique per daemon) and the alias; flock releases
// it when the process dies, and the holder removes the file when done.
func (im *Importer) lock(ctx context.Context, alias string) (unlock func(), err error) {
	id, err := im.serverIdentity()
	if err != nil {
		return nil, fmt.Errorf("identify server for lock of %s: %w", alias, err)
	}
	dir := im.LockDir
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "incusexec-imagebuild")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("lock directory: %w", err)
	}
	key := sha256.Sum256([]byte(id + "\x00" + alias))
	path := filepath.Join(dir, hex.EncodeToString(key[:12])+".lock")
	for delay := 10 * time.Millisecond; ; delay = min(2*delay, 500*time.Millisecond) {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, fmt.Errorf("lock of %s: %w", alias, err)
		}
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			// The holder before us removes the file when it is done; a lock
			// on a removed file locks nothing, so check that ours is still
			// the one at path.
			var held, named syscall.Stat_t
			if syscall.Fstat(int(f.Fd()), &held) == nil && syscall.Stat(path, &named) == nil && held.Ino == named.Ino {
				return func() { os.Remove(path); f.Close() }, nil
			}
			f.Close()
			continue
		}
		f.Close()
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			return nil, fmt.Errorf("lock %s for %s: %w", path, alias, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for another import of %s: %w", alias, context.Cause(ctx))
		case <-time.After(delay):
		}
	}
}

// serverIdentity returns what tells this Importer's server (and project)
// apart from others, asking the server once: the client caches the answer
// without a lock, so concurrent GetServer calls race.
func (im *Importer) serverIdentity() (string, error) {
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.serverID != "" {
		return im.serverID, nil
	}
	// On a copy: GetServer stores its answer in the client it is called on,
	// and the Client is shared with other packages (incusop.Bind copies it).
	srv, _, err := incusop.Bind(context.Background(), im.Client).GetServer()
	if err != nil {
		return "", err
	}
	im.serverID = srv.Environment.Certificate + "\x00" + srv.Environment.Project
	return im.serverID, nil
}
