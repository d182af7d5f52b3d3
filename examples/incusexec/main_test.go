package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/incusexec/incusexec/internal/incustest"
)

// envMain makes the test binary act as incusexec, for the tests that send
// it signals.
const envMain = "INCUSEXEC_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	virtServerMain()
	if os.Getenv(envMain) == "1" {
		main()
	}
	incustest.Main(m)
}

// result is one in-process run of the command line.
type result struct {
	code           int
	stdout, stderr string
}

// incusexec runs the command line in-process against d (when not nil),
// with its own owner unless args set one.
func incusexec(t *testing.T, ctx context.Context, d *incustest.Daemon, stdin string, args ...string) result {
	t.Helper()
	if d != nil {
		args = append([]string{"--socket", d.Socket}, args...)
	}
	var out, errb bytes.Buffer
	code := run(ctx, args, strings.NewReader(stdin), &out, &errb)
	r := result{code, out.String(), errb.String()}
	t.Logf("incusexec %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	return r
}
