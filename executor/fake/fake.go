package fake

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"sync"

	"github.com/incusexec/incusexec/executor"
)

// Executor is an in-memory executor.Executor. Set its exported fields before
// first use (New fills the defaults); they are not guarded for later change.
type Executor struct {
	// Alias is the image alias ("fake/image" when empty).
	Alias string
	// VM makes the executor pretend its image is a VM image (it changes
	// AutopkgtestArgs only).
	VM bool
	// Profile is the profile named in AutopkgtestArgs ("default" when
	// empty).
	Profile string
	// Prefix starts generated instance names ("fake-" when empty).
	Prefix string
	// Unavailable, when set, is the reason Available reports
	// executor.ErrUnavailable.
	Unavailable string
	// Commands are scripted commands by name: Exec looks up Args[0], then
	// its base name, here before the built-in commands (see Builtins).
	Commands map[string]Handler
	// Files seeds the file tree of every new instance (on top of a minimal
	// base: /etc/passwd, /root, /tmp, ...), by absolute path. Parents must
	// be given or exist in the base.
	Files map[string]File
	// Stats is what Stats reports for a running instance (zero fields get
	// plausible defaults); a stopped instance reports zero usage.
	Stats executor.Stats
	// AllowedRoots is the mount allowlist: a mount source must resolve to
	// a directory under one of them. New sets it to os.TempDir(); empty
	// refuses every mount.
	AllowedRoots []string

	mu        sync.Mutex
	image     bool
	instances map[string]*Instance
	calls     []Call
	counts    map[Op]int
	faults    []fault
}

// New returns an executor with the defaults set, whose image is not yet
// available (call EnsureImage, as with a real backend).
func New() *Executor {
	return &Executor{AllowedRoots: []string{os.TempDir()}}
}

var _ executor.Executor = (*Executor)(nil)

func (e *Executor) alias() string {
	if e.Alias == "" {
		return "fake/image"
	}
	return e.Alias
}

// Image returns the image alias.
func (e *Executor) Image() string { return e.alias() }

// Available returns nil, or an error wrapping executor.ErrUnavailable with
// the reason in Unavailable.
func (e *Executor) Available(ctx context.Context) (err error) {
	defer e.record(OpAvailable, "", nil, &err)
	if err := e.enter(ctx, OpAvailable); err != nil {
		return err
	}
	if e.Unavailable != "" {
		return fmt.Errorf("%w: %s", executor.ErrUnavailable, e.Unavailable)
	}
	return nil
}

// EnsureImage makes the image available.
func (e *Executor) EnsureImage(ctx context.Context) (err error) {
	defer e.record(OpEnsureImage, "", nil, &err)
	if err := e.enter(ctx, OpEnsureImage); err != nil {
		return err
	}
	if e.Unavailable != "" {
		return fmt.Errorf("image %s: %w: %s", e.alias(), executor.ErrUnavailable, e.Unavailable)
	}
	e.mu.Lock()
	e.image = true
	e.mu.Unlock()
	return nil
}

// RemoveImage removes the image; instances keep running.
func (e *Executor) RemoveImage(ctx context.Context) (err error) {
	defer e.record(OpRemoveImage, "", nil, &err)
	if err := e.enter(ctx, OpRemoveImage); err != nil {
		return err
	}
	e.mu.Lock()
	e.image = false
	e.mu.Unlock()
	return nil
}

// ImagePresent reports whether the image is available.
func (e *Executor) ImagePresent() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.image
}

// Create creates a stopped instance from the image.
func (e *Executor) Create(ctx context.Context, spec executor.Spec) (_ executor.Instance, err error) {
	defer func() {
		var name string
		if err == nil {
			name = spec.Name
		}
		e.record(OpCreate, name, nil, &err)
	}()
	if err := e.enter(ctx, OpCreate); err != nil {
		return nil, err
	}
	if spec.Name != "" {
		if err := executor.CheckName(spec.Name); err != nil {
			return nil, err
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.image {
		return nil, fmt.Errorf("image %s: %w", e.alias(), executor.ErrNotFound)
	}
	if e.instances == nil {
		e.instances = map[string]*Instance{}
	}
	if spec.Name == "" {
		prefix := e.Prefix
		if prefix == "" {
			prefix = "fake-"
		}
		for spec.Name == "" || e.instances[spec.Name] != nil && e.instances[spec.Name].state != stateGone {
			b := make([]byte, 4)
			_, _ = rand.Read(b)
			spec.Name = prefix + hex.EncodeToString(b)
		}
	} else if in := e.instances[spec.Name]; in != nil && in.state != stateGone {
		return nil, fmt.Errorf("instance %s: %w", spec.Name, executor.ErrAlreadyExists)
	}
	in := &Instance{ex: e, name: spec.Name, spec: spec, state: stateStopped, files: baseImage(), execs: map[*int]context.CancelFunc{}}
	for p, f := range e.Files {
		f := f
		f.Data = append([]byte(nil), f.Data...)
		f.Mode = fileMode(f.Mode)
		in.files[p] = &f
	}
	in.users = map[string]executor.User{"root": {Name: "root", Home: "/root"}}
	e.instances[spec.Name] = in
	return in, nil
}

// Statistics returns inst.Stats(ctx).
func (e *Executor) Statistics(ctx context.Context, inst executor.Instance) (_ executor.Stats, err error) {
	defer e.record(OpStatistics, inst.Name(), nil, &err)
	if err := e.enter(ctx, OpStatistics); err != nil {
		return executor.Stats{}, err
	}
	return inst.Stats(ctx)
}

// List returns the names of the instances that exist, sorted.
func (e *Executor) List(ctx context.Context) (_ []string, err error) {
	defer e.record(OpList, "", nil, &err)
	if err := e.enter(ctx, OpList); err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var names []string
	for name, in := range e.instances {
		if in.state != stateGone {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names, nil
}

// AutopkgtestArgs returns [alias, "--", "--profile", P], "--vm" first for VM.
func (e *Executor) AutopkgtestArgs() []string {
	profile := e.Profile
	if profile == "" {
		profile = "default"
	}
	args := []string{e.alias(), "--", "--profile", profile}
	if e.VM {
		args = append([]string{"--vm"}, args...)
	}
	return args
}

// Instance returns the instance named name (also after it is gone, to
// inspect its last state), or nil.
func (e *Executor) Instance(name string) *Instance {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.instances[name]
}

func (e *Executor) stats() executor.Stats {
	s := e.Stats
	if s.CPUs == 0 {
		s.CPUs = 2
	}
	if s.MemoryTotal == 0 {
		s.MemoryTotal = 1 << 30
	}
	if s.MemoryUsed == 0 {
		s.MemoryUsed = 32 << 20
	}
	if s.DiskAvailable == 0 {
		s.DiskAvailable = 10 << 30
	}
	if s.DiskUsed == 0 {
		s.DiskUsed = 100 << 20
	}
	return s
}

// fileMode normalises a seeded or pushed mode.
func fileMode(m fs.FileMode) fs.FileMode { return m&fs.ModeType | perm(m) }
