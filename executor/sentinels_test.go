package executor_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// partDirs are the packages whose errors reach hosts through a backend.
// The test reads their source (go/ast), so that this package's tests stay
// free of every backend.
var partDirs = []string{
	"../instance", "../instance/warmpool", "../instance/virtserver",
	"../mount", "../mount/incus", "../mount/hostbind",
	"../imagebuild", "../netbridge", "incus",
}

// deliberatelyUnmapped are the parts' sentinels that are no executor
// sentinel, on purpose, each with its reason.
var deliberatelyUnmapped = map[string]string{
	// A command that could not be run, or whose outcome is unknown, is the
	// error of Exec itself; hosts read its message, there is no executor
	// sentinel to test for.
	"instance.ErrExec": "Exec's own failure",
	// A user that is missing also wraps instance.ErrNotFound; alone, ErrUser
	// means creating the user failed, which is no bad input of the host's
	// and no state of the instance.
	"instance.ErrUser": "user creation failed",
	// The Reaper is the host's own, used beside the executor, never through
	// it: nothing an executor call returns wraps ErrReaperClosed.
	"instance.ErrReaperClosed": "not reachable through an executor",
	// A warm pool is the host's own too; closed or empty is its state, not
	// an instance's.
	"warmpool.ErrClosed": "not reachable through an executor",
	"warmpool.ErrEmpty":  "not reachable through an executor",
	// virt-server speaks autopkgtest's protocol to autopkgtest, not to hosts.
	"virtserver.ErrUsage":    "autopkgtest protocol",
	"virtserver.ErrProtocol": "autopkgtest protocol",
}

// TestEverySentinelMapped fails when a part gains an exported sentinel
// that is not declared as (or derived from, executor.Sentinel) one of this
// package's, and is not listed in deliberatelyUnmapped with its reason.
func TestEverySentinelMapped(t *testing.T) {
	found := 0
	for _, dir := range partDirs {
		fset := token.NewFileSet()
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		pkg := filepath.Base(dir)
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
						found++
						where := pkg + "." + n.Name
						mapped := i < len(vs.Values) && derived(vs.Values[i])
						_, unmapped := deliberatelyUnmapped[where]
						switch {
						case mapped && unmapped:
							t.Errorf("%s is mapped: remove it from deliberatelyUnmapped", where)
						case !mapped && !unmapped:
							t.Errorf("%s has no mapping: declare it executor.Sentinel(msg, executor.ErrX), or list it in deliberatelyUnmapped with the reason", where)
						}
					}
				}
			}
		}
	}
	if found < 20 {
		t.Fatalf("found only %d sentinels in %v", found, partDirs)
	}
}

// derived reports whether e is executor.ErrX or executor.Sentinel(msg,
// executor.ErrX).
func derived(e ast.Expr) bool {
	isExecutorErr := func(e ast.Expr) bool {
		sel, ok := e.(*ast.SelectorExpr)
		if !ok || !strings.HasPrefix(sel.Sel.Name, "Err") {
			return false
		}
		x, ok := sel.X.(*ast.Ident)
		return ok && x.Name == "executor"
	}
	if isExecutorErr(e) {
		return true
	}
	call, ok := e.(*ast.CallExpr)
	if !ok || len(call.Args) != 2 {
		return false
	}
	sel, ok := call.Fun.(*ast.SelectorExpr)
	if !ok || sel.Sel.Name != "Sentinel" {
		return false
	}
	if x, ok := sel.X.(*ast.Ident); !ok || x.Name != "executor" {
		return false
	}
	return isExecutorErr(call.Args[1])
}
