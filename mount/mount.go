package mount

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/incusexec/incusexec/executor"
)

// Mounter attaches host directories to instances, shared and
// reference-counted per (instance, alias): the first Acquire of an alias by
// an instance attaches it, the Release of the last handle detaches it.
type Mounter interface {
	// Acquire makes source visible inside instance at Path(alias) and returns
	// a handle that holds it there until Release. Source must lie under one
	// of the mounter's allowed roots (ErrNotAllowed otherwise). When the alias
	// is already attached to the instance, the handle shares that mount; its
	// source and options must then be the same (ErrInUse otherwise).
	Acquire(ctx context.Context, instance, alias, source string, opts executor.MountOptions) (Handle, error)
	// Release drops the handle's hold; the mount goes when no hold is left.
	// Releasing a handle twice, or one the mounter never issued, fails with
	// ErrNotHeld. Releasing a handle of an instance that no longer exists
	// succeeds: its mounts went with it.
	Release(ctx context.Context, h Handle) error
}

// Inspector lists what is attached to an instance and who holds it.
type Inspector interface {
	// Mounts returns the instance's mounts managed by this package, sorted
	// by alias. It fails with ErrNotFound when the instance does not exist.
	Mounts(ctx context.Context, instance string) ([]Mount, error)
}

// Handle is one hold on a mounted alias. It is a plain value: a host may
// store it (in a database, say) and pass it to Release of another Mounter
// over the same instances, for instance after a restart.
type Handle struct {
	Instance string
	Alias    string
	// Path is where the directory appears inside the instance: Path(Alias).
	Path string
	// Holder identifies this hold among those of the same mount.
	Holder string
}

// Propagations are the values executor.MountOptions.Propagation accepts
// besides "".
var Propagations = []string{"private", "shared", "slave", "unbindable", "rprivate", "rshared", "rslave", "runbindable"}

// ValidateOptions reports an error wrapping ErrInvalid when o cannot be
// honoured.
func ValidateOptions(o executor.MountOptions) error {
	if o.Propagation == "" {
		return nil
	}
	for _, p := range Propagations {
		if o.Propagation == p {
			return nil
		}
	}
	return fmt.Errorf("%w: propagation %q (want one of %s)", ErrInvalid, o.Propagation, strings.Join(Propagations, ", "))
}

// Mount describes one attached alias of an instance.
type Mount struct {
	Alias string
	// Path is Path(Alias).
	Path string
	// Source is the host directory, symlinks resolved.
	Source  string
	Options executor.MountOptions
	// Holders are the handles that hold the mount, sorted by ID; the mount's
	// reference count is len(Holders).
	Holders []Holder
}

// Holder is one hold on a mount.
type Holder struct {
	// ID is Handle.Holder.
	ID string
	// Owner names the manager that acquired it (its configured owner).
	Owner string
}

// Errors returned by mounters, wrapped with the names of the things
// involved; test for them with errors.Is.
var (
	// ErrNotAllowed: the source is relative, missing, not a directory, or
	// does not lie under an allowed root once symlinks are resolved.
	ErrNotAllowed = executor.Sentinel("mount: source not allowed", executor.ErrNotAllowed)
	// ErrInvalid: a malformed alias, instance name, handle or option.
	ErrInvalid = executor.Sentinel("mount: invalid argument", executor.ErrInvalid)
	// ErrInUse: the alias is attached with another source or other options,
	// or its device name or path is taken by something this package does
	// not manage.
	ErrInUse = executor.Sentinel("mount: in use", executor.ErrAlreadyExists)
	// ErrNotFound: the instance does not exist.
	ErrNotFound = executor.Sentinel("mount: instance not found", executor.ErrNotFound)
	// ErrNotHeld: the handle was already released or never issued.
	ErrNotHeld = executor.Sentinel("mount: handle not held", executor.ErrNotMounted)
	// ErrSourceMissing: the server found no source directory where it
	// runs the instance. The allowlist check sees this process's host; on
	// a cluster, the member hosting the instance must have the directory
	// too (a shared file system, or the same path on every member).
	ErrSourceMissing = executor.Sentinel("mount: source missing where the instance runs", executor.ErrNotAllowed)
	// ErrUnreadable: the source directory could be attached but nobody in
	// the instance could read it: an unprivileged container without
	// MountOptions.Shift sees a directory whose owner and group it does not map
	// as nobody's, so only its "other" permission bits count, and they lack
	// read or search. Set Shift (an idmapped mount), or make the directory
	// readable by others (chmod o+rx) or owned by an id the container maps.
	ErrUnreadable = executor.Sentinel("mount: source unreadable inside the instance", executor.ErrNotAllowed)
)

// DataDir is the directory inside an instance under which aliases appear.
const DataDir = "/data"

// HashLen is the length of AliasHash's result in hexadecimal digits
// (128 bits).
const HashLen = 32

// MaxAliasLen is the longest alias accepted, in bytes.
const MaxAliasLen = 255

// AliasHash is the stable name of an alias: the first HashLen lowercase
// hexadecimal digits of the SHA-256 of the alias's UTF-8 bytes, so 128 bits
// (a collision among 10^15 aliases has odds below 10^-8). A shell computes
// it with
//
//	printf %s "$alias" | sha256sum | cut -c1-32
//
// It never changes: it names paths inside instances and devices on servers.
func AliasHash(alias string) string {
	sum := sha256.Sum256([]byte(alias))
	return hex.EncodeToString(sum[:])[:HashLen]
}

// Path is where alias appears inside an instance: DataDir/AliasHash(alias).
func Path(alias string) string { return DataDir + "/" + AliasHash(alias) }

// ValidateAlias reports an error wrapping ErrInvalid unless alias is 1 to
// MaxAliasLen bytes of UTF-8 without control characters. Aliases are never
// used as paths (only their hash is), so any other character is fine.
func ValidateAlias(alias string) error {
	if alias == "" {
		return fmt.Errorf("%w: empty alias", ErrInvalid)
	}
	if len(alias) > MaxAliasLen {
		return fmt.Errorf("%w: alias of %d bytes (at most %d)", ErrInvalid, len(alias), MaxAliasLen)
	}
	if !utf8.ValidString(alias) {
		return fmt.Errorf("%w: alias %q is not UTF-8", ErrInvalid, alias)
	}
	for _, r := range alias {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: alias %q contains control character %U", ErrInvalid, alias, r)
		}
	}
	return nil
}

// CheckInstance is executor.CheckName, its error also wrapping ErrInvalid:
// how mounters check the instance names they are given.
func CheckInstance(name string) error {
	if err := executor.CheckName(name); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// NewHolderID returns a fresh random holder ID (16 hexadecimal digits).
func NewHolderID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// ValidateHandle reports an error wrapping ErrInvalid when h cannot have
// been issued by a Mounter.
func ValidateHandle(h Handle) error {
	if err := CheckInstance(h.Instance); err != nil {
		return fmt.Errorf("handle: %w", err)
	}
	if err := ValidateAlias(h.Alias); err != nil {
		return fmt.Errorf("handle: %w", err)
	}
	if h.Holder == "" {
		return fmt.Errorf("%w: handle of %s on %s has no holder", ErrInvalid, h.Alias, h.Instance)
	}
	return nil
}

// HandleOf returns a handle on a hold of alias on instance that owner took
// (Holder.Owner), found through insp: how a handle that took no hold
// itself (a new process, after a restart) releases one of its owner's. It
// fails with an error wrapping executor.ErrNotMounted when owner holds none.
func HandleOf(ctx context.Context, insp Inspector, instance, alias, owner string) (Handle, error) {
	ms, err := insp.Mounts(ctx, instance)
	if err != nil {
		return Handle{}, err
	}
	for _, m := range ms {
		if m.Alias != alias {
			continue
		}
		for _, hd := range m.Holders {
			if hd.Owner == owner {
				return Handle{Instance: instance, Alias: alias, Path: m.Path, Holder: hd.ID}, nil
			}
		}
	}
	return Handle{}, fmt.Errorf("instance %s: unmount %s: %w", instance, alias, executor.ErrNotMounted)
}

// CheckAcquire checks what every Mounter's Acquire is given — the instance
// name, the alias and the options — before anything is attached, so that
// backends refuse bad input alike (errors wrap ErrInvalid).
func CheckAcquire(instance, alias string, opts executor.MountOptions) error {
	if err := CheckInstance(instance); err != nil {
		return err
	}
	if err := ValidateAlias(alias); err != nil {
		return err
	}
	return ValidateOptions(opts)
}
