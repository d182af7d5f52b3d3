package imagebuild

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
)

// Compression names a compression of the image (unified mode) or of the
// input stream (detected from its first bytes).
type Compression string

// The compressions imagebuild reads (all) and writes (None, Gzip, Zstd).
const (
	None Compression = "none"
	Gzip Compression = "gzip"
	Xz   Compression = "xz"
	Zstd Compression = "zstd"
	// QCOW2 is not a compression: it marks a qcow2 disk image input.
	QCOW2 Compression = "qcow2"
)

// detect returns the format of a stream from its first bytes.
func detect(head []byte) Compression {
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return Gzip
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}):
		return Xz
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return Zstd
	case bytes.HasPrefix(head, []byte{'Q', 'F', 'I', 0xfb}):
		return QCOW2
	}
	return None
}

// sniff returns the format of r and a reader that still yields all of r.
func sniff(r io.Reader) (Compression, io.Reader, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, err := br.Peek(8)
	if err != nil && err != io.EOF && !errors.Is(err, bufio.ErrBufferFull) {
		return "", nil, err
	}
	return detect(head), br, nil
}

// decompress returns the decompressed form of r, a stream compressed with c.
// xz (threaded: multi-block files decompress on every core) and zstd run as the host's xz and zstd binaries, streaming through
// pipes: Go's standard library reads neither, they are faster than any Go
// implementation, and an import depends on no module beyond the Incus
// client. Close releases the filter and reports its failure (corrupt or
// truncated input) as an error wrapping ErrBadArchive.
func decompress(ctx context.Context, c Compression, r io.Reader) (io.ReadCloser, error) {
	switch c {
	case None:
		return io.NopCloser(r), nil
	case Gzip:
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("%w: gzip: %w", ErrBadArchive, err)
		}
		return &gzipReader{zr}, nil
	case Xz:
		return filter(ctx, r, "xz", "-d", "-c", "-q", "-T0")
	case Zstd:
		return filter(ctx, r, "zstd", "-d", "-c", "-q")
	}
	return nil, fmt.Errorf("%w: cannot decompress %s", ErrBadArchive, c)
}

type gzipReader struct{ *gzip.Reader }

func (g *gzipReader) Read(p []byte) (int, error) {
	n, err := g.Reader.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%w: gzip: %w", ErrBadArchive, err)
	}
	return n, err
}

// filterReader is the output of an external filter process.
type filterReader struct {
	cmd    *exec.Cmd
	out    io.ReadCloser
	stderr *bytes.Buffer
	tool   string
	once   sync.Once
	err    error
}

// filter runs tool with args, feeding it r and returning its output. The
// output reports the tool's failure when it ends.
func filter(ctx context.Context, r io.Reader, tool string, args ...string) (*filterReader, error) {
	cmd := exec.CommandContext(ctx, tool, args...)
	cmd.Stdin = r
	f := &filterReader{cmd: cmd, stderr: &bytes.Buffer{}, tool: tool}
	cmd.Stderr = f.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	f.out = out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", tool, err)
	}
	return f, nil
}

func (f *filterReader) Read(p []byte) (int, error) {
	n, err := f.out.Read(p)
	if err == io.EOF {
		// The tool's verdict decides whether the stream ended well.
		if werr := f.wait(); werr != nil {
			return n, werr
		}
	}
	return n, err
}

func (f *filterReader) wait() error {
	f.once.Do(func() {
		if err := f.cmd.Wait(); err != nil {
			msg := strings.TrimSpace(f.stderr.String())
			if !strings.HasPrefix(msg, f.tool) {
				msg = f.tool + ": " + msg
			}
			f.err = fmt.Errorf("%w: %s (%w)", ErrBadArchive, msg, err)
		}
	})
	return f.err
}

// Close stops the tool if it still runs and waits for it.
func (f *filterReader) Close() error {
	_ = f.out.Close()
	if f.cmd.ProcessState == nil {
		_ = f.cmd.Process.Kill()
	}
	err := f.wait()
	return err
}
