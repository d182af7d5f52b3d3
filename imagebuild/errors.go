package imagebuild

import "errors"

// Sentinel errors; the errors Import returns wrap them together with the
// name of the entry, alias or file at fault.
var (
	// ErrBadSource: the Source cannot be imported as given (no ID, an ID
	// that makes no alias, neither Path nor Reader, a profile in
	// Metadata.Profiles that does not exist).
	ErrBadSource = errors.New("imagebuild: bad source")
	// ErrBadArchive: the input is not a readable (compressed) tar stream or
	// disk image: not a tar, truncated, corrupt compression, absurd sizes.
	ErrBadArchive = errors.New("imagebuild: bad archive")
	// ErrUnsafeEntry: an entry would land outside the root filesystem
	// (absolute name, "..", a path through a symbolic link, a hard link to
	// something not in the archive).
	ErrUnsafeEntry = errors.New("imagebuild: unsafe archive entry")
	// ErrNoInit: the root filesystem has neither /sbin/init nor
	// /usr/sbin/init, so no container could boot from it.
	ErrNoInit = errors.New("imagebuild: no /sbin/init or /usr/sbin/init in root filesystem")
	// ErrUnknownArchitecture: the architecture has no Incus name.
	ErrUnknownArchitecture = errors.New("imagebuild: unknown architecture")
	// ErrConflict: the alias exists for different content (another SHA256)
	// and Options.Replace is off.
	ErrConflict = errors.New("imagebuild: alias exists with different content")
	// ErrNotFound: no image has the alias.
	ErrNotFound = errors.New("imagebuild: image alias not found")
	// ErrInUse: the image is used by instances and was not deleted.
	ErrInUse = errors.New("imagebuild: image in use")
)
