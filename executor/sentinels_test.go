package executor

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/incusexec/incusexec/instance"
	"github.com/matryer/is"
)

// exportedSentinels parses the package in dir and returns its exported
// Err* variables, name → the message given to errors.New.
func exportedSentinels(t *testing.T, dir string) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.VAR {
				continue
			}
			for _, sp := range g.Specs {
				vs := sp.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if !n.IsExported() || !strings.HasPrefix(n.Name, "Err") {
						continue
					}
					msg, ok := errorsNewMessage(vs, i)
					if !ok {
						t.Fatalf("%s.%s is not errors.New(\"...\"): this test cannot check its mapping", dir, n.Name)
					}
					out[n.Name] = msg
				}
			}
		}
	}
	return out
}

func errorsNewMessage(vs *ast.ValueSpec, i int) (string, bool) {
	if i >= len(vs.Values) {
		return "", false
	}
	call, ok := vs.Values[i].(*ast.CallExpr)
	if !ok || len(call.Args) != 1 {
		return "", false
	}
	sel, ok := call.Fun.(*ast.SelectorExpr)
	if !ok || sel.Sel.Name != "New" {
		return "", false
	}
	if x, ok := sel.X.(*ast.Ident); !ok || x.Name != "errors" {
		return "", false
	}
	lit, ok := call.Args[0].(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

// TestEverySentinelMapped fails when instance or mount gains an exported
// sentinel that is neither mapped onto this package's (partSentinels) nor
// listed as unmapped on purpose (unmappedSentinels).
func TestEverySentinelMapped(t *testing.T) {
	known := map[string]bool{}
	for _, s := range partSentinels {
		known[s.part.Error()] = true
	}
	for _, e := range unmappedSentinels {
		known[e.Error()] = true
	}
	seen := map[string]string{}
	for _, dir := range []string{"../instance", "../mount"} {
		sentinels := exportedSentinels(t, dir)
		if len(sentinels) == 0 {
			t.Fatalf("found no sentinels in %s", dir)
		}
		for name, msg := range sentinels {
			where := dir[3:] + "." + name
			if other, dup := seen[msg]; dup {
				t.Errorf("%s and %s share the message %q: this test tells sentinels apart by message", where, other, msg)
			}
			seen[msg] = where
			if !known[msg] {
				t.Errorf("%s (%q) has no mapping: add it to partSentinels, or to unmappedSentinels with the reason", where, msg)
			}
		}
	}
}

func TestMapErrUnavailable(t *testing.T) {
	is := is.New(t)
	err := mapErr(fmt.Errorf("instance ie-1 on member m2: %w", instance.ErrUnavailable))
	is.True(errors.Is(err, ErrUnavailable))
	is.True(errors.Is(err, instance.ErrUnavailable))
	is.Equal(err.Error(), "instance ie-1 on member m2: server unavailable")
}
