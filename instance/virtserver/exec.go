package virtserver

import (
	"context"
	"fmt"
	"io"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/instance"
)

// Exit statuses of the execute command besides the testbed command's own.
const (
	// ExitAuxFailed: the execute command itself failed (autopkgtest
	// reserves 254 and 255 for that).
	ExitAuxFailed = 255
	// ExitWas255 replaces a testbed command's own 255, which autopkgtest
	// would take for a failure of the execute command.
	ExitWas255 = 253
)

// loginScript runs "$@" in the environment a login would give (it is run
// under env -i): /etc/environment, the default locale and /etc/profile,
// exported. After the command it kills what still holds its stdout or
// stderr when that is a pipe or a socket (daemons a build or test left
// behind), whose open ends would otherwise keep the exec's output, and so
// the caller, waiting forever; a regular file (a recorded exec's output)
// holds nobody up. A 255 of the command becomes 253. The cleanup uses shell
// builtins only (test -p, -S and -ef on /proc's fd links): every command
// autopkgtest runs pays for it, and a fork costs milliseconds on a busy
// host.
const loginScript = `set -a
[ -r /etc/environment ] && . /etc/environment 2>/dev/null
[ -r /etc/default/locale ] && . /etc/default/locale 2>/dev/null
[ -r /etc/profile ] && . /etc/profile 2>/dev/null
set +a
"$@"
rc=$?
[ "$rc" -ne 255 ] || rc=253
kill=
for fd in 1 2; do
	[ -p /proc/$$/fd/$fd ] || [ -S /proc/$$/fd/$fd ] || continue
	for f in /proc/[0-9]*/fd/*; do
		[ "$f" -ef /proc/$$/fd/$fd ] || continue
		p=${f#/proc/}; p=${p%%/*}
		[ "$p" = $$ ] || [ "$p" = "$PPID" ] && continue
		case " $kill " in *" $p "*) ;; *) kill="$kill $p" ;; esac
	done
done
[ -z "$kill" ] || kill -9 $kill 2>/dev/null
exit $rc
`

// WrapLogin returns argv run under the login environment and with the
// output holders killed (see the package documentation).
func WrapLogin(argv []string) []string {
	return append([]string{"env", "-i", "bash", "-c", loginScript, "autopkgtest-exec"}, argv...)
}

// Execute runs argv as root in in, as the execute command does: in the
// login environment, streams forwarded, background processes holding the
// output killed once argv exits. It returns the exit status for the
// execute command's own process: argv's status (0-125 unchanged, 255 as
// ExitWas255), or ExitAuxFailed with the reason written to stderr when
// the command could not be run or its end not seen.
func Execute(ctx context.Context, in *instance.Instance, argv []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(argv) == 0 {
		fmt.Fprintln(stderr, "autopkgtest-virt-incusexec: execute: no command")
		return ExitAuxFailed
	}
	code, err := in.Exec(ctx, executor.Cmd{
		Args:   WrapLogin(argv),
		Stdin:  stdin,
		Stdout: stdout,
		Stderr: stderr,
	})
	if err != nil {
		fmt.Fprintf(stderr, "autopkgtest-virt-incusexec: execute %q in %s: %v\n", argv, in.Name(), err)
		return ExitAuxFailed
	}
	if code < 0 || code > 255 {
		fmt.Fprintf(stderr, "autopkgtest-virt-incusexec: execute %q in %s: exit status %d\n", argv, in.Name(), code)
		return ExitAuxFailed
	}
	return code
}
