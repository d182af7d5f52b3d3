package imagebuild

import "github.com/incusexec/incusexec/executor"

// Sentinel errors; the errors Import returns wrap them together with the
// name of the entry, alias or file at fault.
var (
	// ErrBadSource: the Source cannot be imported as given (no ID, an ID
	// that makes no alias, neither Path nor Reader, a profile in
	// Metadata.Profiles that does not exist).
	ErrBadSource = executor.Sentinel("imagebuild: bad source", executor.ErrInvalid)
	// ErrBadArchive: the input is not a readable (compressed) tar stream or
	// disk image: not a tar, truncated, corrupt compression, absurd sizes.
	ErrBadArchive = executor.Sentinel("imagebuild: bad archive", executor.ErrInvalid)
	// ErrUnsafeEntry: an entry would land outside the root filesystem
	// (absolute name, "..", a path through a symbolic link, a hard link to
	// something not in the archive).
	ErrUnsafeEntry = executor.Sentinel("imagebuild: unsafe archive entry", executor.ErrInvalid)
	// ErrNoInit: the root filesystem has neither /sbin/init nor
	// /usr/sbin/init, so no container could boot from it.
	ErrNoInit = executor.Sentinel("imagebuild: no /sbin/init or /usr/sbin/init in root filesystem", executor.ErrInvalid)
	// ErrUnknownArchitecture: the architecture has no Incus name.
	ErrUnknownArchitecture = executor.Sentinel("imagebuild: unknown architecture", executor.ErrInvalid)
	// ErrConflict: the alias exists for different content (another SHA256)
	// and Options.Replace is off.
	ErrConflict = executor.Sentinel("imagebuild: alias exists with different content", executor.ErrAlreadyExists)
	// ErrNotFound: no image has the alias.
	ErrNotFound = executor.Sentinel("imagebuild: image alias not found", executor.ErrNotFound)
	// ErrInUse: the image is used by instances and was not deleted.
	ErrInUse = executor.Sentinel("imagebuild: image in use", executor.ErrNotAllowed)
)
