package execrelay_test

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/incusexec/incusexec/instance/virtserver/execrelay"
)

// A relay in the process that holds the daemon connection runs what a
// caller (here the same process, as the execute helper would from outside)
// hands it, writing into the caller's own stdout.
func Example() {
	r, err := execrelay.New(func(ctx context.Context, name string, argv []string, stdin io.Reader, stdout, stderr io.Writer) int {
		fmt.Fprintf(stdout, "in %s: %q (stdin nil: %v)\n", name, argv, stdin == nil)
		return 3
	}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Close()
	null, err := os.Open(os.DevNull)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer null.Close()
	code, err := execrelay.Execute(context.Background(), r.Path(), "avs-1", []string{"echo", "hi"}, null, os.Stdout, os.Stderr)
	fmt.Println("status", code, err)
	// Output:
	// in avs-1: ["echo" "hi"] (stdin nil: true)
	// status 3 <nil>
}
