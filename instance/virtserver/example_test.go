package virtserver_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/incusexec/incusexec/instance/virtserver"
)

// memTestbed is a testbed that only pretends: enough to show the protocol.
// A real host uses virtserver.NewIncus.
type memTestbed struct{ name string }

func (m *memTestbed) Open(ctx context.Context) error   { m.name = "avs-1"; return nil }
func (m *memTestbed) Revert(ctx context.Context) error { m.name = "avs-2"; return nil }
func (m *memTestbed) Close(ctx context.Context) error  { m.name = ""; return nil }
func (m *memTestbed) BootID(ctx context.Context) (string, error) {
	return "1", nil
}
func (m *memTestbed) Reboot(ctx context.Context, since string, trigger bool) error { return nil }
func (m *memTestbed) Run(ctx context.Context, c virtserver.Command) (int, error) {
	if c.Args[0] == "mktemp" {
		io.WriteString(c.Stdout, "/tmp/autopkgtest.Xyz123\n")
	}
	return 0, nil
}
func (m *memTestbed) CopyDown(ctx context.Context, host, tb string, dir bool) error { return nil }
func (m *memTestbed) CopyUp(ctx context.Context, tb, host string, dir bool) error   { return nil }
func (m *memTestbed) ExecuteCommand() []string {
	return []string{"/usr/local/bin/incusexec", "--socket=/var/lib/incus/unix.socket", "virt-exec", m.name, "--"}
}
func (m *memTestbed) Capabilities() []string { return []string{"isolation-container"} }

// What autopkgtest says to the server, and what it answers.
func ExampleServer() {
	session := strings.Join([]string{
		"capabilities",
		"open",
		"print-execute-command",
		"revert",
		"print-execute-command",
		"close",
		"quit",
	}, "\n") + "\n"
	s := &virtserver.Server{Testbed: &memTestbed{}}
	if err := s.Serve(context.Background(), strings.NewReader(session), os.Stdout); err != nil {
		fmt.Println("error:", err)
	}
	// Output:
	// ok
	// ok revert revert-full-system root-on-testbed reboot
	// ok /tmp/autopkgtest.Xyz123
	// ok /usr/local/bin/incusexec,--socket%3D/var/lib/incus/unix.socket,virt-exec,avs-1,--
	// ok /tmp/autopkgtest.Xyz123
	// ok /usr/local/bin/incusexec,--socket%3D/var/lib/incus/unix.socket,virt-exec,avs-2,--
	// ok
	// ok
}
