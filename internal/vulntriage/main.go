// Command vulntriage holds govulncheck's findings against the project's
// committed triage file and fails on any finding nobody has looked at.
//
// govulncheck reports every advisory of github.com/lxc/incus/v6 as called,
// because the published records of that module carry no package or symbol
// data: a finding there says "this module is in the build", not "this code is
// reached". Each such advisory is checked by hand against the upstream fix
// (which packages it changed, whether the project compiles and reaches them)
// and recorded in triage.txt with the reason it does not apply. This command
// then makes the triage binding:
//
//	govulncheck -format json ./... > findings.json
//	go run ./internal/vulntriage -triage internal/vulntriage/triage.txt findings.json
//
// It exits 1 when a finding (at any level: called symbol, imported package or
// required module) has no entry, or when an entry says "APPLIES:" (an
// advisory that does reach the project cannot be triaged away), and 2 when
// its input is not a govulncheck JSON stream. Entries for advisories the scan
// no longer reports are listed so that they can be removed. `make vulncheck`
// runs both steps.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("vulntriage", flag.ContinueOnError)
	fs.SetOutput(stderr)
	triagePath := fs.String("triage", "internal/vulntriage/triage.txt", "the triage `file`")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 1 {
		fmt.Fprintln(stderr, "vulntriage: at most one findings file (default: standard input)")
		return 2
	}
	in := stdin
	name := "standard input"
	if fs.NArg() == 1 {
		name = fs.Arg(0)
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintf(stderr, "vulntriage: %v\n", err)
			return 2
		}
		defer f.Close()
		in = f
	}
	tf, err := os.Open(*triagePath)
	if err != nil {
		fmt.Fprintf(stderr, "vulntriage: %v\n", err)
		return 2
	}
	defer tf.Close()
	entries, err := ParseTriage(tf)
	if err != nil {
		fmt.Fprintf(stderr, "vulntriage: %s: %v\n", *triagePath, err)
		return 2
	}
	scan, err := ParseFindings(in)
	if err != nil {
		fmt.Fprintf(stderr, "vulntriage: %s: %v\n", name, err)
		return 2
	}
	v := Check(scan, entries)
	v.Write(stdout)
	if !v.OK() {
		return 1
	}
	return 0
}
