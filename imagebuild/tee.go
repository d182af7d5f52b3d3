package imagebuild

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
)

// validatingTee passes a root filesystem stream through unchanged while a
// goroutine decompresses and validates a copy of it. The end of the stream
// is held back until the validation has passed: on failure the reader
// returns the validation error instead of io.EOF, which aborts the upload
// before Incus has seen a complete request, so no image is created.
type validatingTee struct {
	src  io.Reader
	pw   *io.PipeWriter
	done chan struct{}
	err  error // the validator's verdict, set before done closes

	closeOnce sync.Once
	closeErr  error
}

// errUploadEnded tells the validator that the upload stopped reading.
var errUploadEnded = errors.New("upload ended")

func newValidatingTee(ctx context.Context, src io.Reader) *validatingTee {
	pr, pw := io.Pipe()
	t := &validatingTee{src: src, pw: pw, done: make(chan struct{})}
	go func() {
		defer close(t.done)
		t.err = validateStream(ctx, pr)
		// Unblock the writer whatever happened; after a success the pipe
		// was read to its end already.
		pr.CloseWithError(fmt.Errorf("validation ended: %w", t.err))
	}()
	return t
}

// validateStream decompresses r as its first bytes say and validates the
// tar inside.
func validateStream(ctx context.Context, r *io.PipeReader) error {
	c, br, err := sniff(r)
	if err != nil {
		return err
	}
	if c == QCOW2 {
		return fmt.Errorf("%w: a qcow2 disk image is not a root filesystem tarball", ErrBadArchive)
	}
	rc, err := decompress(ctx, c, br)
	if err != nil {
		return err
	}
	err = Validate(rc)
	if err != nil {
		// Stop the feeding side before waiting for a filter process.
		r.CloseWithError(err)
	}
	if cerr := rc.Close(); err == nil {
		err = cerr
	}
	return err
}

func (t *validatingTee) Read(p []byte) (int, error) {
	n, err := t.src.Read(p)
	if n > 0 {
		if _, werr := t.pw.Write(p[:n]); werr != nil {
			<-t.done
			return 0, t.verdict(werr)
		}
	}
	switch {
	case err == io.EOF:
		t.pw.Close()
		<-t.done
		if t.err != nil {
			return 0, t.err
		}
	case err != nil:
		t.pw.CloseWithError(err)
		<-t.done
	}
	return n, err
}

func (t *validatingTee) verdict(fallback error) error {
	if t.err != nil {
		return t.err
	}
	return fallback
}

// Close stops the validator if it still runs and returns its verdict
// (nil when the stream was read to its end and valid).
func (t *validatingTee) Close() error {
	t.closeOnce.Do(func() {
		t.pw.CloseWithError(errUploadEnded)
		<-t.done
		t.closeErr = t.err
	})
	return t.closeErr
}
