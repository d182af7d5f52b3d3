package virtserver

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"
)

// The login script runs on the host here: what it does with /proc and
// pipes is the same in a container.
func TestLoginScript(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	tests := []struct {
		name string
		argv []string
		code int
		out  string
		// holder: the command prints the PID of a background process
		// that holds its stdout, which must be dead afterwards.
		holder bool
	}{
		{name: "status kept", argv: []string{"sh", "-c", "echo out; exit 42"}, code: 42, out: "out\n"},
		{name: "255 is not the execute command's failure", argv: []string{"sh", "-c", "exit 255"}, code: 253},
		{name: "clean environment", argv: []string{"sh", "-c", "echo ${LEAK:-none}"}, out: "none\n"},
		{name: "argv not reparsed", argv: []string{"printf", "%s|", "a b", "$HOME", "*"}, out: "a b|$HOME|*|"},
		// A daemon left holding stdout would keep the reader waiting forever.
		{name: "background holder killed", argv: []string{"sh", "-c", "sleep 300 & echo $!"}, holder: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			cmd := exec.Command(WrapLogin(tt.argv)[0], WrapLogin(tt.argv)[1:]...)
			cmd.Env = []string{"LEAK=yes", "PATH=/usr/bin:/bin"}
			var out bytes.Buffer
			cmd.Stdout = &out // a pipe, as in an exec
			// Should a holder survive, Run gives up on the pipe after
			// WaitDelay and says so (ErrWaitDelay) instead of hanging.
			cmd.WaitDelay = time.Minute
			err := cmd.Run()
			is.True(!errors.Is(err, exec.ErrWaitDelay))
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else {
				is.NoErr(err)
			}
			is.Equal(code, tt.code)
			if !tt.holder {
				is.Equal(out.String(), tt.out)
				return
			}
			// The holder printed its PID; that Run did not end with
			// ErrWaitDelay says the pipe was closed, which a sleep does
			// only by dying.
			_, err = strconv.Atoi(strings.TrimSpace(out.String()))
			is.NoErr(err)
		})
	}
}

// TestLoginScriptLeavesFileHoldersAlone: a recorded exec's output is a
// regular file, which keeps nobody waiting; a background process writing
// to it is the test's business and lives on.
func TestLoginScriptLeavesFileHoldersAlone(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	is := is.New(t)
	argv := WrapLogin([]string{"sh", "-c", "sleep 300 & echo $!"})
	out, err := os.CreateTemp(t.TempDir(), "stdout")
	is.NoErr(err)
	defer out.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	cmd.Stdout = out
	is.NoErr(cmd.Run())
	b, err := os.ReadFile(out.Name())
	is.NoErr(err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	is.NoErr(err)
	defer syscall.Kill(pid, syscall.SIGKILL)
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	is.NoErr(err) // the process still exists
	_, after, _ := strings.Cut(string(stat), ") ")
	is.True(!strings.HasPrefix(after, "Z") && !strings.HasPrefix(after, "X")) // and was not killed
}
