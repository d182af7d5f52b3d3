package imagebuild

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

// MaxEntrySize is the largest file size a tar header may claim; larger is
// taken for a corrupt or hostile archive.
const MaxEntrySize = 64 << 30

// maxEntries bounds the bookkeeping of one archive (hard-link targets and
// symbolic link names are remembered).
const maxEntries = 10_000_000

// checker validates a root filesystem tar stream entry by entry.
type checker struct {
	// seen holds non-directory entries already in the archive: the only
	// valid hard-link targets.
	seen map[string]struct{}
	// symlinks holds symbolic link names: no later entry may go through one.
	symlinks map[string]struct{}
	hasInit  bool
	entries  int
}

func newChecker() *checker {
	return &checker{seen: map[string]struct{}{}, symlinks: map[string]struct{}{}}
}

// cleanName returns the rootfs-relative form of a tar entry name ("" for the
// root itself), rejecting names that leave the root.
func cleanName(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%w: empty entry name", ErrUnsafeEntry)
	}
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("%w: %q: absolute name", ErrUnsafeEntry, name)
	}
	if strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("%w: %q: NUL in name", ErrUnsafeEntry, name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", fmt.Errorf("%w: %q: \"..\" in name", ErrUnsafeEntry, name)
		}
	}
	c := path.Clean(name)
	if c == "." {
		return "", nil
	}
	return c, nil
}

// check validates one header and returns the entry's cleaned name.
func (c *checker) check(h *tar.Header) (string, error) {
	name, err := cleanName(h.Name)
	if err != nil {
		return "", err
	}
	if c.entries++; c.entries > maxEntries {
		return "", fmt.Errorf("%w: more than %d entries", ErrBadArchive, maxEntries)
	}
	if h.Size < 0 || h.Size > MaxEntrySize {
		return "", fmt.Errorf("%w: %q: size %d out of range", ErrBadArchive, h.Name, h.Size)
	}
	// A sparse entry is a few bytes that expand to up to MaxEntrySize of
	// zeros: refused rather than streamed.
	if h.Typeflag == tar.TypeGNUSparse {
		return "", fmt.Errorf("%w: %q: sparse files are not supported", ErrBadArchive, h.Name)
	}
	for k := range h.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return "", fmt.Errorf("%w: %q: sparse files are not supported", ErrBadArchive, h.Name)
		}
	}
	for p := path.Dir(name); p != "." && p != "/"; p = path.Dir(p) {
		if _, ok := c.symlinks[p]; ok {
			return "", fmt.Errorf("%w: %q: path goes through symbolic link %q", ErrUnsafeEntry, h.Name, p)
		}
	}
	switch h.Typeflag {
	case tar.TypeDir:
		if name != "" {
			delete(c.symlinks, name)
		}
		return name, nil
	case tar.TypeReg, tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		if name == "" {
			return "", fmt.Errorf("%w: %q: the root is not a directory", ErrUnsafeEntry, h.Name)
		}
		// Incus creates device nodes as root on the host when it unpacks
		// the image: a root filesystem has them in /dev only.
		if (h.Typeflag == tar.TypeChar || h.Typeflag == tar.TypeBlock) && !strings.HasPrefix(name, "dev/") {
			return "", fmt.Errorf("%w: %q: device node outside /dev", ErrUnsafeEntry, h.Name)
		}
		delete(c.symlinks, name)
	case tar.TypeSymlink:
		if name == "" {
			return "", fmt.Errorf("%w: %q: the root is not a directory", ErrUnsafeEntry, h.Name)
		}
		if h.Linkname == "" {
			return "", fmt.Errorf("%w: %q: symbolic link without target", ErrBadArchive, h.Name)
		}
		c.symlinks[name] = struct{}{}
	case tar.TypeLink:
		target, err := cleanName(h.Linkname)
		if err != nil || target == "" {
			return "", fmt.Errorf("%w: %q: hard link to %q outside the archive", ErrUnsafeEntry, h.Name, h.Linkname)
		}
		if _, ok := c.seen[target]; !ok {
			return "", fmt.Errorf("%w: %q: hard link to %q, which is not earlier in the archive", ErrUnsafeEntry, h.Name, h.Linkname)
		}
		if name == "" {
			return "", fmt.Errorf("%w: %q: the root is not a directory", ErrUnsafeEntry, h.Name)
		}
		delete(c.symlinks, name)
	default:
		return "", fmt.Errorf("%w: %q: unsupported entry type %q", ErrBadArchive, h.Name, h.Typeflag)
	}
	c.seen[name] = struct{}{}
	if name == "sbin/init" || name == "usr/sbin/init" {
		c.hasInit = true
	}
	return name, nil
}

// finish reports what can only be known at the end of the archive.
func (c *checker) finish() error {
	if c.entries == 0 {
		return fmt.Errorf("%w: empty archive", ErrBadArchive)
	}
	if !c.hasInit {
		return ErrNoInit
	}
	return nil
}

// tarError turns an archive/tar error into one wrapping ErrBadArchive.
func tarError(err error, after string) error {
	if errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrBadArchive) {
		err = fmt.Errorf("truncated archive: %w", err)
	}
	prefix := ErrBadArchive
	if errors.Is(err, ErrBadArchive) {
		// A decompressor's error already says what is wrong.
		prefix = nil
	}
	switch {
	case after == "" && prefix == nil:
		return err
	case after == "":
		return fmt.Errorf("%w: %w", prefix, err)
	case prefix == nil:
		return fmt.Errorf("after entry %q: %w", after, err)
	}
	return fmt.Errorf("%w: after entry %q: %w", prefix, after, err)
}

// Validate reads an uncompressed root filesystem tar stream to its end and
// reports the first problem: an unsafe entry, a malformed archive, or no
// init. It reads the rest of r after the end-of-archive marker too.
func Validate(r io.Reader) error {
	c := newChecker()
	cr := &countingReader{r: r}
	tr := tar.NewReader(cr)
	last := ""
	var dataEnd int64 // where the last entry's data (with padding) ends
	for {
		h, err := tr.Next()
		if err == io.EOF {
			// Go's reader also ends at a header boundary with no
			// end-of-archive blocks; GNU tar in incusd does not.
			if cr.n == dataEnd {
				where := "at the start"
				if last != "" {
					where = "after " + last
				}
				return fmt.Errorf("%w: no end-of-archive marker %s (truncated at an entry boundary?)", ErrBadArchive, where)
			}
			break
		}
		if err != nil {
			return tarError(err, last)
		}
		if _, err := c.check(h); err != nil {
			return err
		}
		last = h.Name
		dataEnd = cr.n + (h.Size+511)/512*512
	}
	if err := c.finish(); err != nil {
		return err
	}
	_, err := io.Copy(io.Discard, r)
	return err
}

// countingReader counts the bytes read through it. archive/tar reads no
// further than it needs, so after Next the count is where the entry's header
// ends.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
