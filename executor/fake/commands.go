package fake

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/incusexec/incusexec/executor"
)

// Handler runs one command and returns its exit code. It should return soon
// after ctx ends (the command is being killed); Exec returns at once
// anyway, and output written afterwards is dropped.
type Handler func(ctx context.Context, p *Process) int

// Process is a running command, as a Handler sees it.
type Process struct {
	// Args is the command line; Args[0] is the name as given.
	Args []string
	// Env is the complete environment (PATH, HOME, USER, LANG and Cmd.Env).
	Env map[string]string
	// Dir is the working directory.
	Dir string
	// UID and GID are the credentials the command runs with.
	UID, GID int
	Stdin    io.Reader
	Stdout   io.Writer
	Stderr   io.Writer
	// Instance gives access to the instance's files (ReadFile, WriteFile).
	Instance *Instance
}

// Abs resolves p against the working directory.
func (p *Process) Abs(name string) string {
	if path.IsAbs(name) {
		return path.Clean(name)
	}
	return path.Join(p.Dir, name)
}

// Builtins returns the commands every fake instance knows, which are the
// command vocabulary of the conformance suite (executor/executortest): the
// commands, with the arguments below, that any backend's image must provide
// (busybox and Debian do).
//
//	true, false         exit 0, exit 1
//	sh -c 'exit N'      exit N (the fake's sh knows no other script)
//	echo [-n] ARGS...   ARGS joined by spaces, then a newline unless -n
//	cat [FILE...]       stdin, or the files, to stdout; "cat: FILE: No such
//	                    file or directory" or "...: Permission denied" to
//	                    stderr and exit 1
//	sleep SECONDS       wait, or until killed
//	pwd                 the working directory
//	env                 the environment, a NAME=VALUE line each
//	id -u | -g          the uid or gid
//	touch FILE...       create empty files (exit 1 where not permitted)
//
// A command that is neither here nor in Executor.Commands exits with 127.
func Builtins() map[string]Handler {
	return map[string]Handler{
		"true":  func(context.Context, *Process) int { return 0 },
		"false": func(context.Context, *Process) int { return 1 },
		"sh":    sh,
		"echo":  echo,
		"cat":   cat,
		"sleep": sleep,
		"pwd":   pwd,
		"env":   env,
		"id":    id,
		"touch": touch,
	}
}

var builtins = Builtins()

func (e *Executor) handler(name string) Handler {
	if h, ok := e.Commands[name]; ok {
		return h
	}
	if h, ok := e.Commands[path.Base(name)]; ok {
		return h
	}
	if name != path.Base(name) && !strings.HasPrefix(name, "/bin/") && !strings.HasPrefix(name, "/usr/bin/") {
		return notFound127
	}
	if h, ok := builtins[path.Base(name)]; ok {
		return h
	}
	return notFound127
}

func notFound127(_ context.Context, p *Process) int {
	fmt.Fprintf(p.Stderr, "%s: not found\n", p.Args[0])
	return 127
}

func sh(_ context.Context, p *Process) int {
	if len(p.Args) == 3 && p.Args[1] == "-c" {
		if n, ok := strings.CutPrefix(strings.TrimSpace(p.Args[2]), "exit "); ok {
			if code, err := strconv.Atoi(strings.TrimSpace(n)); err == nil && code >= 0 && code < 256 {
				return code
			}
		}
	}
	fmt.Fprintf(p.Stderr, "fake sh: only `sh -c 'exit N'` is built in (register Commands[\"sh\"]): %q\n", p.Args[1:])
	return 2
}

func echo(_ context.Context, p *Process) int {
	args, nl := p.Args[1:], "\n"
	if len(args) > 0 && args[0] == "-n" {
		args, nl = args[1:], ""
	}
	fmt.Fprint(p.Stdout, strings.Join(args, " ")+nl)
	return 0
}

func cat(ctx context.Context, p *Process) int {
	if len(p.Args) == 1 {
		if _, err := io.Copy(p.Stdout, ctxReader{ctx, p.Stdin}); err != nil {
			return 1
		}
		return 0
	}
	code := 0
	for _, name := range p.Args[1:] {
		in := p.Instance
		in.ex.mu.Lock()
		abs := p.Abs(name)
		info, err := in.stat(abs)
		var data []byte
		if err == nil && !mayAccess(info, p.UID, p.GID, 4) {
			err = errPermission
		}
		if err == nil {
			data, _, err = in.readFile(abs)
		}
		in.ex.mu.Unlock()
		if err != nil {
			fmt.Fprintf(p.Stderr, "cat: %s: %s\n", name, errText(err))
			code = 1
			continue
		}
		_, _ = p.Stdout.Write(data)
	}
	return code
}

func errText(err error) string {
	switch {
	case errors.Is(err, executor.ErrNotFound):
		return "No such file or directory"
	case errors.Is(err, errPermission):
		return "Permission denied"
	case errors.Is(err, errReadOnly):
		return "Read-only file system"
	case errors.Is(err, executor.ErrInvalid):
		return "Is a directory"
	}
	return err.Error()
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func sleep(ctx context.Context, p *Process) int {
	if len(p.Args) != 2 {
		fmt.Fprintln(p.Stderr, "usage: sleep SECONDS")
		return 1
	}
	s, err := strconv.ParseFloat(p.Args[1], 64)
	if err != nil || s < 0 {
		fmt.Fprintf(p.Stderr, "sleep: invalid number %q\n", p.Args[1])
		return 1
	}
	t := time.NewTimer(time.Duration(s * float64(time.Second)))
	defer t.Stop()
	select {
	case <-t.C:
		return 0
	case <-ctx.Done():
		return 137
	}
}

func pwd(_ context.Context, p *Process) int {
	fmt.Fprintln(p.Stdout, p.Dir)
	return 0
}

func env(_ context.Context, p *Process) int {
	if len(p.Args) > 1 {
		fmt.Fprintln(p.Stderr, "fake env: only env without arguments is built in")
		return 125
	}
	keys := make([]string, 0, len(p.Env))
	for k := range p.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(p.Stdout, "%s=%s\n", k, p.Env[k])
	}
	return 0
}

func id(_ context.Context, p *Process) int {
	switch {
	case len(p.Args) == 2 && p.Args[1] == "-u":
		fmt.Fprintln(p.Stdout, p.UID)
	case len(p.Args) == 2 && p.Args[1] == "-g":
		fmt.Fprintln(p.Stdout, p.GID)
	default:
		fmt.Fprintln(p.Stderr, "fake id: only -u and -g are built in")
		return 1
	}
	return 0
}

func touch(_ context.Context, p *Process) int {
	code := 0
	for _, name := range p.Args[1:] {
		in := p.Instance
		abs := p.Abs(name)
		in.ex.mu.Lock()
		err := func() error {
			if _, err := in.stat(abs); err == nil {
				return nil
			}
			parent, err := in.stat(path.Dir(abs))
			if err != nil {
				return err
			}
			if !mayAccess(parent, p.UID, p.GID, 3) {
				return errPermission
			}
			return in.writeFile(abs, nil, executor.FileOptions{UID: p.UID, GID: p.GID})
		}()
		in.ex.mu.Unlock()
		if err != nil {
			fmt.Fprintf(p.Stderr, "touch: %s: %s\n", name, errText(err))
			code = 1
		}
	}
	return code
}
