package imagebuild

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/internal/incusop"
	incus "github.com/lxc/incus/v6/client"
	"github.com/lxc/incus/v6/shared/api"
	"golang.org/x/sync/singleflight"
)

// Client is the part of the Incus client (incus.InstanceServer) that an
// Importer calls.
type Client interface {
	CreateImage(image api.ImagesPost, args *incus.ImageCreateArgs) (incus.Operation, error)
	GetImage(fingerprint string) (*api.Image, string, error)
	UpdateImage(fingerprint string, image api.ImagePut, etag string) error
	DeleteImage(fingerprint string) (incus.Operation, error)
	GetImageAlias(name string) (*api.ImageAliasesEntry, string, error)
	CreateImageAlias(alias api.ImageAliasesPost) error
	UpdateImageAlias(name string, alias api.ImageAliasesEntryPut, etag string) error
	DeleteImageAlias(name string) error
	GetInstances(instanceType api.InstanceType) ([]api.Instance, error)
	GetServer() (*api.Server, string, error)
	GetProfile(name string) (*api.Profile, string, error)
}

// AliasPrefix starts the alias of every image imported for an artifact.
const AliasPrefix = "artifact/"

// Image properties imagebuild sets besides those of Metadata (and the owner,
// under executor.OwnerKey).
const (
	// PropertySHA256 holds the SHA-256 of the source stream as read.
	PropertySHA256 = "incusexec.source_sha256"
)

var validID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// Alias returns the alias of the image of artifact id, or an error wrapping
// ErrBadSource when id cannot make one.
func Alias(id string) (string, error) {
	if !validID.MatchString(id) {
		return "", fmt.Errorf("%w: artifact ID %q (want 1-128 letters, digits, '.', '_' or '-')", ErrBadSource, id)
	}
	return AliasPrefix + id, nil
}

// Mode is how the image is assembled.
type Mode string

const (
	// Split (the default) uploads the root filesystem stream unchanged and
	// puts every customisation in the small metadata tarball, as templates.
	Split Mode = "split"
	// Unified re-roots the root filesystem under rootfs/ into one tarball
	// with the metadata, compressed as Options.Compression says.
	Unified Mode = "unified"
)

// Type is the kind of instance the image is for.
type Type string

const (
	Container      Type = "container"
	VirtualMachine Type = "virtual-machine"
)

// Metadata describes the image in metadata.yaml and its properties.
type Metadata struct {
	// Architecture is a Debian (amd64, arm64, ...) or Incus (x86_64, ...)
	// architecture name; the host's when empty.
	Architecture string
	// Description, OS and Release become the image properties of the same
	// names.
	Description, OS, Release string
	// Properties are added to the image properties.
	Properties map[string]string
	// Profiles are the profiles instances of the image get when created
	// without a profile list (incus init IMAGE NAME): they are set on the
	// image record at upload, where Incus reads them (metadata.yaml also
	// lists them, but Incus ignores that). Each must exist in the
	// project; empty leaves Incus's default, [default].
	Profiles []string
	// Created is the creation date; now when zero.
	Created time.Time
	// NoTemplates leaves out the hostname, hosts and generator templates.
	NoTemplates bool

	// ArtifactID is set by Import from Source.ID.
	ArtifactID string
}

// Source is what an image is made of.
type Source struct {
	// ID identifies the artifact; the image gets alias "artifact/<ID>".
	ID string
	// Path is a file holding a root filesystem tarball (.tar, .tar.gz,
	// .tar.xz, .tar.zst) or, for VirtualMachine, a qcow2 or raw disk.
	// Compression is recognised from the content, not the name.
	Path string
	// Reader is read instead of Path when Path is empty (once: an import
	// from a Reader cannot be retried). When Reader is also an io.Closer,
	// Import closes it if ctx ends during the import, so that a read blocked
	// on a stalled source returns; otherwise the caller must unblock it.
	Reader io.Reader
	// Size is the length of Reader's stream for progress reports (Path's is
	// found by stat).
	Size int64
	// SHA256, when known, is the hex SHA-256 of the stream: an existing
	// image with another one makes Import fail with ErrConflict (or replace
	// it, with Options.Replace).
	SHA256 string
	// Metadata describes the image.
	Metadata Metadata
}

// Options tune one import.
type Options struct {
	// Mode is Split when empty.
	Mode Mode
	// Type is Container when empty.
	Type Type
	// Compression of a Unified image: None, Gzip or Zstd; DefaultCompression
	// when empty.
	Compression Compression
	// Replace imports even when the alias exists, then points the alias at
	// the new image atomically and deletes the old image unless an instance
	// uses it.
	Replace bool
	// SkipValidation uploads a split image's root filesystem without
	// checking it on the way: no ErrNoInit, ErrUnsafeEntry or ErrBadArchive
	// then, and a broken archive only shows when an instance is created. It
	// is for streams the host already trusts (an artifact whose digest it
	// verified), where decompressing the whole stream to check it would
	// cost more than the upload (xz: several times more). Unified and
	// virtual-machine imports always parse their input.
	SkipValidation bool
	// Owner is recorded in the user.incusexec.owner image property.
	Owner string
	// Progress, when set, is called as the source is read with the bytes
	// read so far and the total (0 when unknown). It is called often from
	// the reading goroutine and must be quick.
	Progress func(read, total int64)
}

// DefaultCompression is the compression of Unified images when
// Options.Compression is empty. Measured here (156 MB bookworm rootfs,
// alternating rounds): launches on a dir pool took 7.5 s (none), 8.9 s
// (gzip), 10.4 s (zstd) in the median; on btrfs 1.07 s (none), 1.93 s
// (gzip), 1.11 s (zstd) for the first launch and ~0.16 s for later ones.
// None also imports fastest from a local file, so it is the default; zstd
// is the choice when the upload crosses a network.
const DefaultCompression = None

// Image is an imported image.
type Image struct {
	Alias       string
	Fingerprint string
	// Reused says that the alias already pointed to an image of the
	// artifact, which is returned instead of importing again.
	Reused bool
}

// Importer imports system tarballs as Incus images. Its zero value is not
// usable: set Client. An Importer is safe for concurrent use; concurrent
// imports of one artifact share one upload.
type Importer struct {
	Client Client
	// Logger receives progress and clean-up problems; nil discards.
	Logger *slog.Logger
	// LockDir holds the lock files that serialise imports of one artifact
	// to one server across processes; os.TempDir()/incusexec-imagebuild
	// when empty.
	LockDir string

	imports  singleflight.Group // by alias
	mu       sync.Mutex         // guards serverID
	serverID string
}

func (im *Importer) log() *slog.Logger {
	if im.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return im.Logger
}

// Import makes the image of src available under alias artifact/<src.ID> and
// returns it. When the alias already exists (and Replace is off) the image
// is reused. Any failure, including ctx ending, leaves no image and no alias
// of this import behind.
func (im *Importer) Import(ctx context.Context, src Source, opts Options) (Image, error) {
	alias, err := Alias(src.ID)
	if err != nil {
		return Image{}, err
	}
	if src.Path == "" && src.Reader == nil {
		return Image{}, fmt.Errorf("%w: %s: neither Path nor Reader", ErrBadSource, alias)
	}
	if opts.Mode == "" {
		opts.Mode = Split
	}
	if opts.Type == "" {
		opts.Type = Container
	}
	if opts.Compression == "" {
		opts.Compression = DefaultCompression
	}
	switch {
	case opts.Mode != Split && opts.Mode != Unified:
		return Image{}, fmt.Errorf("%w: %s: unknown mode %q", ErrBadSource, alias, opts.Mode)
	case opts.Type != Container && opts.Type != VirtualMachine:
		return Image{}, fmt.Errorf("%w: %s: unknown type %q", ErrBadSource, alias, opts.Type)
	case opts.Compression != None && opts.Compression != Gzip && opts.Compression != Zstd:
		return Image{}, fmt.Errorf("%w: %s: cannot write %q compression (want none, gzip or zstd)", ErrBadSource, alias, opts.Compression)
	case opts.Type == VirtualMachine && opts.Mode == Unified:
		return Image{}, fmt.Errorf("%w: %s: virtual-machine images are split only", ErrBadSource, alias)
	}
	src.Metadata.ArtifactID = src.ID
	if src.Metadata.Architecture == "" {
		src.Metadata.Architecture = debianArch(runtime.GOARCH)
	}
	if _, err := IncusArchitecture(src.Metadata.Architecture); err != nil {
		return Image{}, fmt.Errorf("%s: %w", alias, err)
	}
	return im.shareImport(ctx, alias, func() (Image, error) {
		return im.importLocked(context.WithoutCancel(ctx), ctx, alias, src, opts)
	})
}

func debianArch(goarch string) string {
	switch goarch {
	case "386":
		return "i386"
	case "arm":
		return "armhf"
	case "ppc64le":
		return "ppc64el"
	case "mips64le":
		return "mips64el"
	}
	return goarch
}

// importLocked runs under the cross-process lock of the alias. base carries
// no cancellation (clean-up must run to the end); ctx is the first caller's.
func (im *Importer) importLocked(base, ctx context.Context, alias string, src Source, opts Options) (Image, error) {
	unlock, err := im.lock(ctx, alias)
	if err != nil {
		return Image{}, err
	}
	defer unlock()
	log := im.log().With("alias", alias)

	var old *api.ImageAliasesEntry
	var oldETag string
	switch entry, etag, err := im.Client.GetImageAlias(alias); {
	case err == nil:
		if !opts.Replace {
			img, _, err := im.Client.GetImage(entry.Target)
			if err != nil {
				return Image{}, fmt.Errorf("image %s of alias %s: %w", entry.Target, alias, err)
			}
			if src.SHA256 != "" && img.Properties[PropertySHA256] != "" && img.Properties[PropertySHA256] != src.SHA256 {
				return Image{}, fmt.Errorf("%w: %s has sha256 %s, source %s", ErrConflict, alias, img.Properties[PropertySHA256], src.SHA256)
			}
			log.Debug("reusing image", "fingerprint", entry.Target)
			return Image{Alias: alias, Fingerprint: entry.Target, Reused: true}, nil
		}
		old, oldETag = entry, etag
	case api.StatusErrorCheck(err, http.StatusNotFound):
	default:
		return Image{}, fmt.Errorf("look up alias %s: %w", alias, err)
	}

	for _, p := range src.Metadata.Profiles {
		if _, _, err := im.Client.GetProfile(p); api.StatusErrorCheck(err, http.StatusNotFound) {
			return Image{}, fmt.Errorf("%w: %s: profile %q does not exist (create it before the image)", ErrBadSource, alias, p)
		} else if err != nil {
			return Image{}, fmt.Errorf("%s: look up profile %q: %w", alias, p, err)
		}
	}
	start := time.Now()
	fp, sum, err := im.upload(ctx, alias, src, opts)
	if err != nil {
		return Image{}, err
	}
	log.Info("image uploaded", "fingerprint", fp, "mode", opts.Mode, "took", time.Since(start))
	// From here on the image exists: any failure deletes it.
	fail := func(err error) (Image, error) {
		if derr := im.deleteImage(base, fp); derr != nil {
			log.Warn("cannot delete image after failed import", "fingerprint", fp, "err", derr)
			err = errors.Join(err, derr)
		}
		return Image{}, err
	}
	if err := im.label(fp, sum, opts); err != nil {
		return fail(fmt.Errorf("label image %s of %s: %w", fp, alias, err))
	}
	if err := ctx.Err(); err != nil {
		return fail(fmt.Errorf("import %s: %w", alias, context.Cause(ctx)))
	}

	if old != nil {
		if old.Target == fp {
			return Image{Alias: alias, Fingerprint: fp}, nil
		}
		put := old.ImageAliasesEntryPut
		put.Target = fp
		if err := im.Client.UpdateImageAlias(alias, put, oldETag); err != nil {
			return fail(fmt.Errorf("point alias %s at %s: %w", alias, fp, err))
		}
		if err := im.deleteIfUnused(base, old.Target); err != nil {
			log.Info("old image kept", "fingerprint", old.Target, "reason", err)
		}
		return Image{Alias: alias, Fingerprint: fp}, nil
	}
	err = im.Client.CreateImageAlias(api.ImageAliasesPost{
		ImageAliasesEntry: api.ImageAliasesEntry{Name: alias, Type: string(opts.Type), ImageAliasesEntryPut: api.ImageAliasesEntryPut{
			Target: fp, Description: "incusexec imagebuild of artifact " + src.ID,
		}},
	})
	if err != nil {
		// Another process (on another host, without our lock) won the race:
		// its image stands and ours goes.
		if winner, _, gerr := im.Client.GetImageAlias(alias); gerr == nil && winner.Target != fp {
			_, _ = fail(err)
			log.Info("alias created concurrently; reusing", "fingerprint", winner.Target)
			return Image{Alias: alias, Fingerprint: winner.Target, Reused: true}, nil
		}
		return fail(fmt.Errorf("create alias %s: %w", alias, err))
	}
	return Image{Alias: alias, Fingerprint: fp}, nil
}

// label records the owner and the source digest on the image.
func (im *Importer) label(fp, sum string, opts Options) error {
	img, etag, err := im.Client.GetImage(fp)
	if err != nil {
		return err
	}
	put := img.Writable()
	if put.Properties == nil {
		put.Properties = map[string]string{}
	}
	put.Properties[PropertySHA256] = sum
	if opts.Owner != "" {
		put.Properties[executor.OwnerKey] = opts.Owner
	}
	return im.Client.UpdateImage(fp, put, etag)
}

// open returns the source stream and its size (0 when unknown).
func (src Source) open() (io.ReadCloser, int64, error) {
	if src.Path == "" {
		return io.NopCloser(src.Reader), src.Size, nil
	}
	f, err := os.Open(src.Path)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %w", ErrBadSource, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, st.Size(), nil
}

// upload creates the image and returns its fingerprint and the source's
// SHA-256. It leaves nothing on the server when it fails.
func (im *Importer) upload(ctx context.Context, alias string, src Source, opts Options) (fp, sum string, err error) {
	rc, size, err := src.open()
	if err != nil {
		return "", "", fmt.Errorf("open source of %s: %w", alias, err)
	}
	defer rc.Close()
	// A read blocked on a stalled source (a pipe, a hung download) does not
	// see ctx: close the source when ctx ends so that the read returns.
	unblock := io.Closer(rc)
	if src.Path == "" {
		unblock, _ = src.Reader.(io.Closer)
	}
	if unblock != nil {
		stop := context.AfterFunc(ctx, func() { _ = unblock.Close() })
		defer stop()
	}
	meter := &meter{ctx: ctx, r: rc, total: size, progress: opts.Progress, hash: sha256.New()}

	// The profiles go with the upload (X-Incus-profiles), so the image
	// never exists with the wrong ones.
	post := api.ImagesPost{Filename: alias, ImagePut: api.ImagePut{Profiles: slices.Clone(src.Metadata.Profiles)}}
	var args *incus.ImageCreateArgs
	var stream interface {
		io.Reader
		Close() error
	}
	switch {
	case opts.Type == VirtualMachine:
		disk, cleanup, err := vmDisk(ctx, src, meter)
		if err != nil {
			return "", "", fmt.Errorf("%s: %w", alias, err)
		}
		defer cleanup()
		meta, err := metadataTarball(src.Metadata)
		if err != nil {
			return "", "", err
		}
		args = &incus.ImageCreateArgs{MetaFile: bytes.NewReader(meta), MetaName: "meta.tar",
			RootfsFile: disk, RootfsName: "rootfs.img", Type: string(VirtualMachine)}
	case opts.Mode == Split:
		meta, err := metadataTarball(src.Metadata)
		if err != nil {
			return "", "", err
		}
		var rootfs io.Reader = meter
		if !opts.SkipValidation {
			tee := newValidatingTee(ctx, meter)
			stream, rootfs = tee, tee
		}
		args = &incus.ImageCreateArgs{MetaFile: bytes.NewReader(meta), MetaName: "meta.tar",
			RootfsFile: rootfs, RootfsName: "rootfs.tar", Type: string(Container)}
	default:
		u, err := newUnified(ctx, meter, src.Metadata, opts.Compression)
		if err != nil {
			return "", "", fmt.Errorf("%s: %w", alias, err)
		}
		stream = u
		args = &incus.ImageCreateArgs{MetaFile: u, MetaName: "image.tar"}
	}
	if stream != nil {
		defer stream.Close()
	}

	// The upload runs on a copy bound to ctx (incusop.Bind never binds the
	// host's client itself), and the meter also fails the request body's
	// next read when ctx ends.
	// A copy of the client of its own (incusop.Bind): operations started
	// at once on one v6 client race (see incusop.Shared).
	op, err := incusop.Bind(ctx, im.Client).CreateImage(post, args)
	if stream != nil {
		// The stream's own verdict (bad entry, no init, corrupt
		// compression) explains a failed upload better than the HTTP error.
		if serr := stream.Close(); serr != nil && !errors.Is(serr, errUploadEnded) {
			err = serr
		}
	}
	if err == nil && meter.err != nil {
		err = meter.err
	}
	if err != nil {
		if op != nil {
			im.discard(op)
		}
		if ctx.Err() != nil {
			return "", "", fmt.Errorf("upload %s: %w", alias, context.Cause(ctx))
		}
		return "", "", fmt.Errorf("upload %s: %w", alias, err)
	}
	if err := incusop.Wait(ctx, op, im.Client); err != nil {
		im.discard(op)
		return "", "", fmt.Errorf("import %s: %w", alias, err)
	}
	fp, _ = op.Get().Metadata["fingerprint"].(string)
	if fp == "" {
		return "", "", fmt.Errorf("import %s: server returned no fingerprint", alias)
	}
	return fp, hex.EncodeToString(meter.hash.Sum(nil)), nil
}

// discard waits for an abandoned image operation to end and deletes the
// image it made, if any: a cancelled import must not leave one behind.
func (im *Importer) discard(op incus.Operation) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	_ = op.WaitContext(ctx)
	if fp, _ := op.Get().Metadata["fingerprint"].(string); fp != "" {
		if err := im.deleteImage(ctx, fp); err != nil && !api.StatusErrorCheck(err, http.StatusNotFound) {
			im.log().Warn("cannot delete image of abandoned import", "fingerprint", fp, "err", err)
		}
	}
}

func (im *Importer) deleteImage(ctx context.Context, fp string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	op, err := incusop.Bind(ctx, im.Client).DeleteImage(fp)
	if err != nil {
		return err
	}
	return op.WaitContext(ctx)
}

// deleteIfUnused deletes image fp unless an instance was created from it.
func (im *Importer) deleteIfUnused(ctx context.Context, fp string) error {
	insts, err := im.Client.GetInstances(api.InstanceTypeAny)
	if err != nil {
		return err
	}
	for _, in := range insts {
		if in.Config["volatile.base_image"] == fp {
			return fmt.Errorf("%w: image %s by instance %s", ErrInUse, fp, in.Name)
		}
	}
	return im.deleteImage(ctx, fp)
}

// Delete removes the alias and its image, unless an instance uses the image
// (ErrInUse: the alias is removed, the image kept). A missing alias is
// ErrNotFound.
func (im *Importer) Delete(ctx context.Context, alias string) error {
	entry, _, err := im.Client.GetImageAlias(alias)
	if api.StatusErrorCheck(err, http.StatusNotFound) {
		return fmt.Errorf("%w: %s", ErrNotFound, alias)
	}
	if err != nil {
		return fmt.Errorf("look up alias %s: %w", alias, err)
	}
	if err := im.Client.DeleteImageAlias(alias); err != nil && !api.StatusErrorCheck(err, http.StatusNotFound) {
		return fmt.Errorf("delete alias %s: %w", alias, err)
	}
	if err := im.deleteIfUnused(ctx, entry.Target); err != nil {
		return fmt.Errorf("delete image of %s: %w", alias, err)
	}
	return nil
}

// meter reads the source, hashing it, reporting progress and stopping when
// ctx ends.
type meter struct {
	ctx      context.Context
	r        io.Reader
	read     int64
	total    int64
	progress func(read, total int64)
	hash     hash.Hash
	err      error
}

func (m *meter) Read(p []byte) (int, error) {
	if err := m.ctx.Err(); err != nil {
		m.err = context.Cause(m.ctx)
		return 0, m.err
	}
	n, err := m.r.Read(p)
	if n > 0 {
		m.hash.Write(p[:n])
		m.read += int64(n)
		if m.progress != nil {
			m.progress(m.read, m.total)
		}
	}
	if err != nil && err != io.EOF {
		m.err = fmt.Errorf("read source: %w", err)
		err = m.err
	}
	return n, err
}
