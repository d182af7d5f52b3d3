package executor_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/executor/fake"
	"github.com/matryer/is"
)

func TestCheckName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"ie-0123abcd", true},
		{"Build-42", true},
		{strings.Repeat("a", 63), true},
		{"", false},
		{strings.Repeat("a", 64), false},
		{"-a", false},
		{"1a", false},
		{"a-", false},
		{"a_b", false},
		{"a.b", false},
		{"a/b", false},
		{"ä", false},
	} {
		err := executor.CheckName(tc.name)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, executor.ErrInvalid)) {
			t.Errorf("CheckName(%q) = %v; want ok %v", tc.name, err, tc.ok)
		}
	}
}

func TestCleanPath(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"/", "/"},
		{"/tmp/", "/tmp"},
		{"/a/../b//c", "/b/c"},
		{"/..", "/"},
		{"relative", ""},
		{"", ""},
		{"/a\x00b", ""},
	} {
		got, err := executor.CleanPath(tc.in)
		if got != tc.want || (tc.want == "") != errors.Is(err, executor.ErrInvalid) {
			t.Errorf("CleanPath(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func FuzzCheckName(f *testing.F) {
	for _, s := range []string{"a", "ie-1", "-", "1", "a-", strings.Repeat("x", 64)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if executor.CheckName(name) != nil {
			return
		}
		// A valid name is usable as a single path component and a DNS label.
		if len(name) == 0 || len(name) > 63 || strings.ContainsAny(name, "/._ \x00") || name[0] == '-' || name[len(name)-1] == '-' {
			t.Errorf("CheckName accepted %q", name)
		}
	})
}

func TestOutputCollectsWhatIsNotRedirected(t *testing.T) {
	is := is.New(t)
	ctx := t.Context()
	ex := fake.New()
	is.NoErr(ex.EnsureImage(ctx))
	in, err := ex.Create(ctx, executor.Spec{})
	is.NoErr(err)
	is.NoErr(in.Start(ctx))
	var own strings.Builder
	r, err := executor.Output(ctx, in, executor.Cmd{Args: []string{"cat", "/missing"}, Stdout: &own})
	is.NoErr(err)
	is.Equal(r.ExitCode, 1)
	is.Equal(len(r.Stdout), 0) // stdout went to the caller's writer
	is.Equal(string(r.Stderr), "cat: /missing: No such file or directory\n")
}

// ExampleOutput runs a command in an instance of any backend; here the
// in-memory fake, which needs no daemon.
func ExampleOutput() {
	ctx := context.Background()
	var ex executor.Executor = fake.New()
	if err := ex.EnsureImage(ctx); err != nil {
		panic(err)
	}
	inst, err := ex.Create(ctx, executor.Spec{Ephemeral: true})
	if err != nil {
		panic(err)
	}
	defer inst.Delete(ctx)
	if err := inst.Start(ctx); err != nil {
		panic(err)
	}
	r, err := executor.Output(ctx, inst, executor.Cmd{Args: []string{"echo", "hello from", inst.Name()[:5]}})
	fmt.Printf("%d %q %v\n", r.ExitCode, r.Stdout, err)
	fmt.Println(ex.AutopkgtestArgs())
	// Output:
	// 0 "hello from fake-\n" <nil>
	// [fake/image -- --profile default]
}
