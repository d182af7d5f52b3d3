package fake_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/executor/executortest"
	"github.com/incusexec/incusexec/executor/fake"
	"github.com/matryer/is"
)

func TestConformance(t *testing.T) {
	executortest.Run(t, func(t *testing.T) executor.Executor {
		return fake.New()
	}, executortest.Options{RemoveImage: true})
}

// brokenExecutor is the fake with one deliberate defect, to prove that the
// suite notices.
type brokenExecutor struct {
	*fake.Executor
	defect string
}

func (b *brokenExecutor) Create(ctx context.Context, spec executor.Spec) (executor.Instance, error) {
	in, err := b.Executor.Create(ctx, spec)
	if err != nil {
		return nil, err
	}
	return &brokenInstance{Instance: in.(*fake.Instance), defect: b.defect}, nil
}

type brokenInstance struct {
	*fake.Instance
	defect string
}

func (b *brokenInstance) Exec(ctx context.Context, cmd executor.Cmd) (int, error) {
	code, err := b.Instance.Exec(ctx, cmd)
	switch {
	case b.defect == "exec on a stopped instance succeeds" && errors.Is(err, executor.ErrNotRunning):
		return 0, nil
	case b.defect == "exit codes are lost" && err == nil && code != 0:
		return 0, nil
	case b.defect == "stderr goes to stdout" && cmd.Stdout != nil && cmd.Stderr != nil:
		cmd.Stderr = cmd.Stdout
		return b.Instance.Exec(ctx, cmd)
	}
	return code, err
}

func (b *brokenInstance) Delete(ctx context.Context) error {
	switch b.defect {
	case "delete is not idempotent":
		if b.Instance.State() == "gone" {
			return fmt.Errorf("instance %s: %w", b.Name(), executor.ErrNotFound)
		}
	case "delete leaks the instance":
		return b.Instance.Stop(ctx)
	}
	return b.Instance.Delete(ctx)
}

func (b *brokenInstance) Stop(ctx context.Context) error {
	if b.defect == "stop of a stopped instance fails" && b.Instance.State() == "stopped" {
		return errors.New("already stopped")
	}
	return b.Instance.Stop(ctx)
}

func (b *brokenInstance) Unmount(ctx context.Context, alias string) error {
	err := b.Instance.Unmount(ctx, alias)
	if b.defect == "unmount ignores the count" {
		for err == nil {
			err = b.Instance.Unmount(ctx, alias)
		}
		if errors.Is(err, executor.ErrNotMounted) {
			err = nil
		}
	}
	return err
}

func (b *brokenInstance) Pull(ctx context.Context, src string, w io.Writer) (executor.FileInfo, error) {
	info, err := b.Instance.Pull(ctx, src, w)
	if b.defect == "pull loses the mode" {
		info.Mode = 0o644
	}
	return info, err
}

func (b *brokenInstance) PushTree(ctx context.Context, hostDir, dst string, opts executor.FileOptions) error {
	if b.defect == "push tree loses modes" {
		return filepath.WalkDir(hostDir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(hostDir, p)
			target := filepath.ToSlash(filepath.Join(dst, rel))
			if d.IsDir() {
				return b.Mkdir(ctx, target, opts)
			}
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			return b.Push(ctx, target, f, opts)
		})
	}
	return b.Instance.PushTree(ctx, hostDir, dst, opts)
}

func TestSuiteCatchesBrokenFakes(t *testing.T) {
	for _, tc := range []struct {
		defect string
		checks []string // checks that must fail
	}{
		{"exec on a stopped instance succeeds", []string{"Lifecycle", "ExecState"}},
		{"exit codes are lost", []string{"ExitCodes"}},
		{"stderr goes to stdout", []string{"Streams"}},
		{"delete is not idempotent", []string{"Lifecycle", "Deleted"}},
		{"delete leaks the instance", []string{"Lifecycle", "Names"}},
		{"stop of a stopped instance fails", []string{"Lifecycle"}},
		{"unmount ignores the count", []string{"Mounts"}},
		{"pull loses the mode", []string{"Files"}},
		{"push tree loses modes", []string{"Trees"}},
	} {
		t.Run(tc.defect, func(t *testing.T) {
			t.Parallel()
			is := is.New(t)
			ex := &brokenExecutor{Executor: fake.New(), defect: tc.defect}
			err := executortest.Test(t.Context(), ex, executortest.Options{})
			is.True(err != nil) // the suite passed a broken fake
			t.Logf("the suite reported:\n%v", err)
			for _, name := range tc.checks {
				if !strings.Contains(err.Error(), name+": ") {
					t.Errorf("check %s did not fail; failures:\n%v", name, err)
				}
			}
		})
	}
}

func TestUnbrokenWrapperPasses(t *testing.T) {
	// The wrapper itself is faithful without a defect, so the failures
	// above come from the defects.
	ex := &brokenExecutor{Executor: fake.New()}
	if err := executortest.Test(t.Context(), ex, executortest.Options{}); err != nil {
		t.Fatal(err)
	}
}

func TestSuiteRunsOnlyTheNamedChecks(t *testing.T) {
	is := is.New(t)
	// A defect only Mounts sees: left out, the suite passes; named, it
	// fails, in Mounts alone.
	ex := &brokenExecutor{Executor: fake.New(), defect: "unmount ignores the count"}
	is.NoErr(executortest.Test(t.Context(), ex, executortest.Options{Only: []string{"Names", "Files"}}))
	err := executortest.Test(t.Context(), ex, executortest.Options{Only: []string{"Mounts", "Names"}})
	is.True(err != nil)
	is.True(strings.HasPrefix(err.Error(), "Mounts: "))

	err = executortest.Test(t.Context(), ex, executortest.Options{Only: []string{"Names", "Mount"}})
	is.True(err != nil)
	is.True(strings.Contains(err.Error(), `"Mount"`)) // the name at fault
}

func TestFailOnNthCall(t *testing.T) {
	is := is.New(t)
	ctx := t.Context()
	ex := fake.New()
	boom := errors.New("boom")
	ex.FailOn(fake.OpExec, 2, boom)
	is.NoErr(ex.EnsureImage(ctx))
	in, err := ex.Create(ctx, executor.Spec{})
	is.NoErr(err)
	is.NoErr(in.Start(ctx))
	for i, want := range []error{nil, boom, nil} {
		_, err := in.Exec(ctx, executor.Cmd{Args: []string{"true"}})
		is.True(errors.Is(err, want) || err == want) // call i+1
		_ = i
	}
	ex.FailOn(fake.OpStart, 0, executor.ErrUnavailable)
	is.True(errors.Is(in.Start(ctx), executor.ErrUnavailable))
	is.Equal(ex.CallCount(fake.OpExec), 3)
}

func TestCallsAreRecorded(t *testing.T) {
	is := is.New(t)
	ctx := t.Context()
	ex := fake.New()
	is.NoErr(ex.EnsureImage(ctx))
	in, err := ex.Create(ctx, executor.Spec{Name: "recorded"})
	is.NoErr(err)
	_, err = in.Exec(ctx, executor.Cmd{Args: []string{"echo", "hi"}})
	is.True(errors.Is(err, executor.ErrNotRunning))
	var got []string
	for _, c := range ex.Calls() {
		got = append(got, c.String())
	}
	is.Equal(len(got), 3)
	is.Equal(got[0], "EnsureImage")
	is.Equal(got[1], "Create recorded")
	is.True(strings.HasPrefix(got[2], `Exec recorded ["echo" "hi"]: exec echo: instance recorded: instance not running`))
}

func TestScriptedCommandsAndSeededFiles(t *testing.T) {
	is := is.New(t)
	ctx := t.Context()
	ex := fake.New()
	ex.Files = map[string]fake.File{
		"/etc/os-release": {Mode: 0o644, Data: []byte("ID=debian\n")},
		"/srv":            {Mode: fs.ModeDir | 0o750, UID: 33, GID: 33},
	}
	ex.Commands = map[string]fake.Handler{
		// dpkg-buildpackage writes a .deb next to the source.
		"dpkg-buildpackage": func(ctx context.Context, p *fake.Process) int {
			if err := p.Instance.WriteFile(p.Abs("../hello_1.0_all.deb"), []byte("deb"), executor.FileOptions{UID: p.UID, GID: p.GID}); err != nil {
				fmt.Fprintln(p.Stderr, err)
				return 2
			}
			fmt.Fprintln(p.Stdout, "dpkg-buildpackage: info: binary-only upload")
			return 0
		},
	}
	is.NoErr(ex.EnsureImage(ctx))
	inst, err := ex.Create(ctx, executor.Spec{})
	is.NoErr(err)
	is.NoErr(inst.Start(ctx))
	r, err := executor.Output(ctx, inst, executor.Cmd{Args: []string{"cat", "/etc/os-release"}})
	is.NoErr(err)
	is.Equal(string(r.Stdout), "ID=debian\n")
	st, err := inst.Stat(ctx, "/srv")
	is.NoErr(err)
	is.Equal(st, executor.FileInfo{Path: "/srv", Mode: fs.ModeDir | 0o750, UID: 33, GID: 33})

	u, err := inst.EnsureUser(ctx, "_debusine")
	is.NoErr(err)
	is.NoErr(inst.Mkdir(ctx, "/build/src", executor.FileOptions{UID: u.UID, GID: u.GID}))
	r, err = executor.Output(ctx, inst, executor.Cmd{Args: []string{"dpkg-buildpackage", "-b"}, Dir: "/build/src", User: u.Name})
	is.NoErr(err)
	is.Equal(r.ExitCode, 0)
	var deb bytes.Buffer
	info, err := inst.Pull(ctx, "/build/hello_1.0_all.deb", &deb)
	is.NoErr(err)
	is.Equal(deb.String(), "deb")
	is.Equal(info.UID, u.UID)
	passwd, err := inst.(*fake.Instance).ReadFile("/etc/passwd")
	is.NoErr(err)
	is.True(strings.Contains(string(passwd), "_debusine:x:1000:1000::/home/_debusine:/bin/sh\n"))
}

func TestKilledCommandsAreGone(t *testing.T) {
	is := is.New(t)
	ctx := t.Context()
	ex := fake.New()
	started := make(chan struct{})
	ex.Commands = map[string]fake.Handler{
		"server": func(ctx context.Context, p *fake.Process) int {
			close(started)
			fmt.Fprintln(p.Stdout, "listening")
			<-ctx.Done()
			return 143
		},
	}
	is.NoErr(ex.EnsureImage(ctx))
	inst, err := ex.Create(ctx, executor.Spec{})
	is.NoErr(err)
	in := inst.(*fake.Instance)
	is.NoErr(in.Start(ctx))
	done := make(chan error, 1)
	var out bytes.Buffer
	go func() {
		_, err := in.Exec(ctx, executor.Cmd{Args: []string{"server"}, Stdout: &out})
		done <- err
	}()
	<-started
	is.NoErr(in.Stop(ctx)) // kills the server
	err = <-done
	is.True(errors.Is(err, executor.ErrNotRunning))
	is.Equal(in.Running(), 0)
	is.Equal(out.String(), "listening\n")
}

func TestUnavailable(t *testing.T) {
	is := is.New(t)
	ex := fake.New()
	ex.Unavailable = "no incus socket"
	err := ex.Available(t.Context())
	is.True(errors.Is(err, executor.ErrUnavailable))
	is.True(strings.Contains(err.Error(), "no incus socket"))
	is.Equal(ex.AutopkgtestArgs(), []string{"fake/image", "--", "--profile", "default"})
	ex.VM = true
	is.Equal(ex.AutopkgtestArgs(), []string{"--vm", "fake/image", "--", "--profile", "default"})
}

func TestContextEndedBeforeCall(t *testing.T) {
	is := is.New(t)
	ex := fake.New()
	ctx, cancel := context.WithTimeout(t.Context(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	is.True(errors.Is(ex.EnsureImage(ctx), context.DeadlineExceeded))
}
