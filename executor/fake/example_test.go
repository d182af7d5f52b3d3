package fake_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/executor/fake"
)

// buildPackage is host logic under test: what a Debusine-style worker does
// with any executor. It builds the source tree srcDir in a fresh ephemeral
// instance as an unprivileged user and returns the .deb it made, and it
// never leaves an instance behind.
func buildPackage(ctx context.Context, ex executor.Executor, srcDir string) (deb []byte, err error) {
	if err := ex.EnsureImage(ctx); err != nil {
		return nil, err
	}
	inst, err := ex.Create(ctx, executor.Spec{ID: "work-request-42", Ephemeral: true})
	if err != nil {
		return nil, err
	}
	defer func() {
		if derr := inst.Delete(context.WithoutCancel(ctx)); derr != nil && err == nil {
			err = derr
		}
	}()
	if err := inst.Start(ctx); err != nil {
		return nil, err
	}
	user, err := inst.EnsureUser(ctx, "_debusine")
	if err != nil {
		return nil, err
	}
	src := user.Home + "/build/hello"
	if err := inst.PushTree(ctx, srcDir, src, executor.FileOptions{UID: user.UID, GID: user.GID}); err != nil {
		return nil, err
	}
	var log bytes.Buffer
	code, err := inst.Exec(ctx, executor.Cmd{
		Args: []string{"dpkg-buildpackage", "-us", "-uc"}, Dir: src, User: user.Name,
		Stdout: &log, Stderr: &log,
	})
	if err != nil {
		return nil, err
	}
	if code != 0 {
		return nil, fmt.Errorf("build failed with exit code %d: %s", code, log.String())
	}
	var out bytes.Buffer
	if _, err := inst.Pull(ctx, user.Home+"/build/hello_1.0_all.deb", &out); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// The host's build logic, tested without a daemon: the fake scripts
// dpkg-buildpackage, and a second run shows that an injected failure of
// Pull still leaves no instance behind.
func Example() {
	ctx := context.Background()
	srcDir, _ := os.MkdirTemp("", "hello-src-")
	defer os.RemoveAll(srcDir)
	_ = os.MkdirAll(filepath.Join(srcDir, "debian"), 0o755)
	_ = os.WriteFile(filepath.Join(srcDir, "debian", "control"), []byte("Source: hello\n"), 0o644)

	ex := fake.New()
	ex.Commands = map[string]fake.Handler{
		"dpkg-buildpackage": func(ctx context.Context, p *fake.Process) int {
			control, err := p.Instance.ReadFile(p.Abs("debian/control"))
			if err != nil {
				fmt.Fprintln(p.Stderr, "dpkg-buildpackage: no debian/control")
				return 2
			}
			deb := append([]byte("deb of "), control...)
			if err := p.Instance.WriteFile(p.Abs("../hello_1.0_all.deb"), deb, executor.FileOptions{UID: p.UID, GID: p.GID}); err != nil {
				fmt.Fprintln(p.Stderr, err)
				return 2
			}
			return 0
		},
	}

	deb, err := buildPackage(ctx, ex, srcDir)
	fmt.Printf("%q %v\n", deb, err)

	ex.FailOn(fake.OpPull, 2, errors.New("connection lost"))
	_, err = buildPackage(ctx, ex, srcDir)
	fmt.Println("second build:", err)

	left, _ := ex.List(ctx)
	fmt.Println("instances left:", len(left))
	for _, c := range ex.Calls() {
		if c.Op == fake.OpExec {
			fmt.Println(c.Op, c.Args)
		}
	}
	// Output:
	// "deb of Source: hello\n" <nil>
	// second build: connection lost
	// instances left: 0
	// Exec [dpkg-buildpackage -us -uc]
	// Exec [dpkg-buildpackage -us -uc]
}
