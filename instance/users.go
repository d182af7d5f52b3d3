package instance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/internal/incusop"
	incus "github.com/lxc/incus/v6/client"
	"github.com/lxc/incus/v6/shared/api"
)

// account is a user a command runs as.
type account struct {
	name     string
	uid, gid uint32
	home     string
}

var rootAccount = account{name: "root", home: "/root"}

// passwdEntry is one line of /etc/passwd or /etc/group (home unused).
type passwdEntry struct {
	name     string
	uid, gid uint32
	home     string
}

// parsePasswd reads /etc/passwd lines (name:pw:uid:gid:gecos:home:shell);
// malformed lines are skipped, as the C library does.
func parsePasswd(b []byte) []passwdEntry {
	var out []passwdEntry
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) < 7 || f[0] == "" {
			continue
		}
		uid, err1 := strconv.ParseUint(f[2], 10, 32)
		gid, err2 := strconv.ParseUint(f[3], 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		out = append(out, passwdEntry{name: f[0], uid: uint32(uid), gid: uint32(gid), home: f[5]})
	}
	return out
}

// parseGroup reads /etc/group lines (name:pw:gid:members) into entries whose
// gid is set.
func parseGroup(b []byte) []passwdEntry {
	var out []passwdEntry
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) < 3 || f[0] == "" {
			continue
		}
		gid, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil {
			continue
		}
		out = append(out, passwdEntry{name: f[0], gid: uint32(gid)})
	}
	return out
}

// ValidateUserName reports whether name can be created as a user: 1 to 32
// characters of lower-case letters, digits, '_' and '-', starting with a
// letter or '_' (Debian's useradd rules without its lenient extensions).
func ValidateUserName(name string) error {
	if name == "" || len(name) > 32 {
		return fmt.Errorf("%w: user name %q: want 1 to 32 characters", ErrInvalid, name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c == '_':
		case (c >= '0' && c <= '9' || c == '-') && i > 0:
		default:
			return fmt.Errorf("%w: user name %q: character %q not allowed", ErrInvalid, name, c)
		}
	}
	return nil
}

// EnsureUser returns the user called name, creating it first when it is
// not in /etc/passwd: by Config.CreateUser when set, else useradd (a system
// user with its own group and a home under /home) or, where the instance
// has no useradd, new lines in /etc/passwd and /etc/group and a home
// directory. It is idempotent: an existing user is returned as it is.
// A bad name is an error wrapping ErrInvalid; a failed creation ErrUser.
// The instance must be running.
func (in *Instance) EnsureUser(ctx context.Context, name string) (executor.User, error) {
	if err := ValidateUserName(name); err != nil {
		return executor.User{}, err
	}
	a, err := in.account(ctx, name, "", true)
	if err != nil {
		return executor.User{}, err
	}
	return executor.User{Name: a.name, UID: int(a.uid), GID: int(a.gid), Home: a.home}, nil
}

// account resolves (and, with create, creates where needed) the user and
// group a command runs as. Results are cached on the handle.
func (in *Instance) account(ctx context.Context, user, group string, create bool) (account, error) {
	if (user == "" || user == "root") && (group == "" || group == "root" || group == "0") {
		return rootAccount, nil
	}
	key := user + "\x00" + group
	in.usersMu.Lock()
	defer in.usersMu.Unlock()
	if a, ok := in.users[key]; ok {
		return a, nil
	}
	a, err := in.resolveUser(ctx, user, create)
	if err != nil {
		return account{}, err
	}
	if group != "" {
		if a.gid, err = in.resolveGroup(ctx, group); err != nil {
			return account{}, err
		}
	}
	if in.users == nil {
		in.users = map[string]account{}
	}
	in.users[key] = a
	return a, nil
}

func (in *Instance) resolveUser(ctx context.Context, user string, mayCreate bool) (account, error) {
	if user == "" || user == "root" {
		return rootAccount, nil
	}
	if uidS, gidS, ok := strings.Cut(user, ":"); ok {
		uid, err1 := strconv.ParseUint(uidS, 10, 32)
		gid, err2 := strconv.ParseUint(gidS, 10, 32)
		if err1 != nil || err2 != nil {
			return account{}, fmt.Errorf("%w: user %q: want uid:gid with numbers", ErrInvalid, user)
		}
		a, err := in.numericUser(ctx, uint32(uid))
		a.gid = uint32(gid)
		return a, err
	}
	if uid, err := strconv.ParseUint(user, 10, 32); err == nil {
		return in.numericUser(ctx, uint32(uid))
	}
	if err := ValidateUserName(user); err != nil {
		return account{}, err
	}
	users, err := in.readIDFile(ctx, "/etc/passwd", parsePasswd)
	if err != nil {
		return account{}, fmt.Errorf("%w %s: %w", ErrUser, user, err)
	}
	if e, ok := find(users, user); ok {
		return account{name: e.name, uid: e.uid, gid: e.gid, home: e.home}, nil
	}
	if !mayCreate {
		return account{}, fmt.Errorf("%w %s: %w in /etc/passwd of instance %s (not created: Cmd.NoCreateUser)", ErrUser, user, ErrNotFound, in.name)
	}
	create := in.m.cfg.CreateUser
	if create == nil {
		create = createUser
	}
	in.m.log.Info("creating user", "name", in.name, "user", user)
	if err := create(ctx, in, user); err != nil {
		return account{}, fmt.Errorf("%w %s in instance %s: %w", ErrUser, user, in.name, err)
	}
	if users, err = in.readIDFile(ctx, "/etc/passwd", parsePasswd); err != nil {
		return account{}, fmt.Errorf("%w %s: %w", ErrUser, user, err)
	}
	e, ok := find(users, user)
	if !ok {
		return account{}, fmt.Errorf("%w %s in instance %s: not in /etc/passwd after creation", ErrUser, user, in.name)
	}
	return account{name: e.name, uid: e.uid, gid: e.gid, home: e.home}, nil
}

// numericUser runs as uid; a passwd entry, where there is one, names it.
func (in *Instance) numericUser(ctx context.Context, uid uint32) (account, error) {
	users, err := in.readIDFile(ctx, "/etc/passwd", parsePasswd)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return account{}, fmt.Errorf("%w %d: %w", ErrUser, uid, err)
	}
	for _, e := range users {
		if e.uid == uid {
			return account{name: e.name, uid: uid, gid: e.gid, home: e.home}, nil
		}
	}
	return account{name: strconv.FormatUint(uint64(uid), 10), uid: uid, gid: uid, home: "/"}, nil
}

func (in *Instance) resolveGroup(ctx context.Context, group string) (uint32, error) {
	if gid, err := strconv.ParseUint(group, 10, 32); err == nil {
		return uint32(gid), nil
	}
	groups, err := in.readIDFile(ctx, "/etc/group", parseGroup)
	if err != nil {
		return 0, fmt.Errorf("%w: group %s: %w", ErrUser, group, err)
	}
	if e, ok := find(groups, group); ok {
		return e.gid, nil
	}
	return 0, fmt.Errorf("%w: group %s not in /etc/group of instance %s", ErrUser, group, in.name)
}

func find(es []passwdEntry, name string) (passwdEntry, bool) {
	for _, e := range es {
		if e.name == name {
			return e, true
		}
	}
	return passwdEntry{}, false
}

func (in *Instance) readIDFile(ctx context.Context, p string, parse func([]byte) []passwdEntry) ([]passwdEntry, error) {
	b, err := in.readSmall(ctx, p)
	if err != nil {
		return nil, err
	}
	return parse(b), nil
}

// readSmall reads a small file through the plain file endpoint (one
// request, no SFTP session).
func (in *Instance) readSmall(ctx context.Context, p string) ([]byte, error) {
	rc, resp, err := incusop.Bind(ctx, in.m.c).GetInstanceFile(in.name, p)
	if err != nil {
		return nil, wrapErr(err, in.name, "read "+p)
	}
	if rc == nil || resp != nil && resp.Type != "" && resp.Type != "file" {
		if rc != nil {
			rc.Close()
		}
		typ := "directory"
		if resp != nil && resp.Type != "" {
			typ = resp.Type
		}
		return nil, fmt.Errorf("instance %s: read %s: is a %s, not a file", in.name, p, typ)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 16<<20))
	if err != nil {
		return nil, wrapErr(err, in.name, "read "+p)
	}
	return b, nil
}

func (in *Instance) writeSmall(ctx context.Context, p string, b []byte, mode int) error {
	err := incusop.Bind(ctx, in.m.c).CreateInstanceFile(in.name, p, incus.InstanceFileArgs{
		Content: bytes.NewReader(b), Mode: mode, Type: "file", WriteMode: "overwrite",
	})
	return wrapErr(err, in.name, "write "+p)
}

// createUser is the default user creation: useradd where the instance has
// it (a system user with its own group and a home under /home), otherwise
// new lines in /etc/passwd and /etc/group and a home directory.
func createUser(ctx context.Context, in *Instance, user string) error {
	var stderr bytes.Buffer
	code, err := in.runRoot(ctx, &stderr, "useradd", "--system", "--user-group", "--create-home",
		"--home-dir", "/home/"+user, "--shell", "/bin/sh", user)
	switch {
	case err != nil && code != 127 && code != 126:
		return err
	case code == 0, code == 9: // 9: the name is taken (by a concurrent creation)
		return nil
	case code != 127 && code != 126:
		return fmt.Errorf("useradd exited with %d: %s", code, strings.TrimSpace(stderr.String()))
	}
	in.m.log.Info("no useradd in instance; editing /etc/passwd", "name", in.name, "user", user)
	passwd, err := in.readSmall(ctx, "/etc/passwd")
	if err != nil {
		return err
	}
	group, err := in.readSmall(ctx, "/etc/group")
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	id, err := freeID(parsePasswd(passwd), parseGroup(group))
	if err != nil {
		return err
	}
	home := "/home/" + user
	if err := in.Mkdir(ctx, home, executor.FileOptions{UID: int(id), GID: int(id), Mode: 0o755, MkdirAll: true}); err != nil {
		return err
	}
	if err := in.writeSmall(ctx, "/etc/group", appendLine(group, fmt.Sprintf("%s:x:%d:", user, id)), 0o644); err != nil {
		return err
	}
	return in.writeSmall(ctx, "/etc/passwd", appendLine(passwd, fmt.Sprintf("%s:x:%d:%d::%s:/bin/sh", user, id, id, home)), 0o644)
}

// runRoot runs a command as root, bypassing user resolution.
func (in *Instance) runRoot(ctx context.Context, stderr io.Writer, args ...string) (int, error) {
	req := api.InstanceExecPost{Command: args, WaitForWS: true, Environment: map[string]string{}}
	return in.exec(ctx, req, executor.Cmd{Stderr: stderr}, in.m.cfg.KillGrace)
}

// freeID returns the lowest id from 1000 that is neither a uid nor a gid.
func freeID(users, groups []passwdEntry) (uint32, error) {
	used := map[uint32]bool{}
	for _, u := range users {
		used[u.uid] = true
	}
	for _, g := range groups {
		used[g.gid] = true
	}
	for id := uint32(1000); id < 60000; id++ {
		if !used[id] {
			return id, nil
		}
	}
	return 0, errors.New("no free uid/gid between 1000 and 59999")
}

func appendLine(b []byte, line string) []byte {
	out := append([]byte(nil), b...)
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\n')
	}
	return append(append(out, line...), '\n')
}
