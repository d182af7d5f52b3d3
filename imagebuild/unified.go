package imagebuild

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"sync"
	"time"
)

// unified produces a unified image tarball from a root filesystem stream:
// metadata.yaml and templates/ first, then every entry of the root
// filesystem re-rooted under rootfs/, compressed as asked. A goroutine
// writes it into a pipe that the upload reads, so nothing is stored.
type unified struct {
	pr   *io.PipeReader
	done chan struct{}
	err  error

	closeOnce sync.Once
}

func newUnified(ctx context.Context, src io.Reader, meta Metadata, comp Compression) (*unified, error) {
	files, err := metadataEntries(meta)
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	u := &unified{pr: pr, done: make(chan struct{})}
	go func() {
		defer close(u.done)
		u.err = writeUnified(ctx, pw, src, files, meta.Created, comp)
		// On failure the upload reads the error instead of a clean end.
		pw.CloseWithError(u.err)
	}()
	return u, nil
}

func (u *unified) Read(p []byte) (int, error) { return u.pr.Read(p) }

// Close stops the producer if the upload stopped early, and returns its
// verdict: nil when the whole image was produced.
func (u *unified) Close() error {
	u.closeOnce.Do(func() { u.pr.CloseWithError(errUploadEnded) })
	<-u.done
	return u.err
}

// writeUnified writes the unified image to w.
func writeUnified(ctx context.Context, w io.Writer, src io.Reader, files map[string][]byte, created time.Time, comp Compression) (err error) {
	if created.IsZero() {
		created = time.Now()
	}
	c, br, err := sniff(src)
	if err != nil {
		return err
	}
	if c == QCOW2 {
		return fmt.Errorf("%w: a qcow2 disk image is not a root filesystem tarball", ErrBadArchive)
	}
	in, err := decompress(ctx, c, br)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := in.Close(); err == nil {
			err = cerr
		}
	}()
	out, err := compressor(ctx, w, comp)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			out.abort()
		}
	}()
	tw := tar.NewWriter(out)
	if err := writeMetadata(tw, files, created); err != nil {
		return err
	}
	if err := Reroot(tw, in, "rootfs"); err != nil {
		return err
	}
	// Read what follows the end-of-archive marker, so that a decompressor
	// ends on its own and reports corrupt input.
	if _, err := io.Copy(io.Discard, in); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return out.Close()
}

// Reroot copies the root filesystem tar stream r into tw with every entry
// moved under dir: names and hard-link targets are rewritten, symbolic
// links (whose targets are resolved inside the instance) and device nodes
// are kept as they are. It validates r as Validate does, and stops at the
// first unsafe entry. It writes no end-of-archive marker.
func Reroot(tw *tar.Writer, r io.Reader, dir string) error {
	ck := newChecker()
	tr := tar.NewReader(r)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755, ModTime: time.Unix(0, 0)}); err != nil {
		return err
	}
	last := ""
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return tarError(err, last)
		}
		name, err := ck.check(h)
		if err != nil {
			return err
		}
		last = h.Name
		switch {
		case name == "":
			h.Name = dir + "/"
		case h.Typeflag == tar.TypeDir:
			h.Name = dir + "/" + name + "/"
		default:
			h.Name = dir + "/" + name
		}
		if h.Typeflag == tar.TypeLink {
			target, _ := cleanName(h.Linkname)
			h.Linkname = dir + "/" + target
		}
		// Let the writer pick the format that can hold the longer name.
		h.Format = tar.FormatUnknown
		if len(h.PAXRecords) > 0 {
			h.Format = tar.FormatPAX
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("write entry %q: %w", h.Name, err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := io.Copy(tw, tr); err != nil {
				if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, tar.ErrHeader) {
					return tarError(err, last)
				}
				return fmt.Errorf("copy entry %q: %w", last, err)
			}
		}
	}
	return ck.finish()
}

// compressWriter is a compression stage writing into the upload pipe.
type compressWriter interface {
	io.Writer
	// Close flushes and reports success.
	Close() error
	// abort stops without a clean end.
	abort()
}

type nopCompressor struct{ io.Writer }

func (nopCompressor) Close() error { return nil }
func (nopCompressor) abort()       {}

type gzipCompressor struct{ *gzip.Writer }

func (gzipCompressor) abort() {}

// zstdCompressor runs the host's zstd binary (multi-threaded, and the
// format Incus unpacks fastest after none).
type zstdCompressor struct {
	cmd *exec.Cmd
	in  io.WriteCloser
}

func (z *zstdCompressor) Write(p []byte) (int, error) { return z.in.Write(p) }

func (z *zstdCompressor) Close() error {
	if err := z.in.Close(); err != nil {
		return err
	}
	if err := z.cmd.Wait(); err != nil {
		return fmt.Errorf("zstd: %w", err)
	}
	return nil
}

func (z *zstdCompressor) abort() {
	_ = z.in.Close()
	_ = z.cmd.Process.Kill()
	_ = z.cmd.Wait()
}

func compressor(ctx context.Context, w io.Writer, c Compression) (compressWriter, error) {
	switch c {
	case None:
		return nopCompressor{w}, nil
	case Gzip:
		zw, _ := gzip.NewWriterLevel(w, gzip.BestSpeed)
		return gzipCompressor{zw}, nil
	case Zstd:
		cmd := exec.CommandContext(ctx, "zstd", "-q", "-c", "-3", "-T0")
		cmd.Stdout = w
		in, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start zstd: %w", err)
		}
		return &zstdCompressor{cmd: cmd, in: in}, nil
	}
	return nil, fmt.Errorf("%w: cannot write %q compression", ErrBadSource, c)
}
