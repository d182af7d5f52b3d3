package imagetest

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// BusyboxPath is the statically linked busybox that Busybox puts in the
// system: Debian's busybox-static.
const BusyboxPath = "/bin/busybox"

// busyboxRC brings up loopback and, when there is one, eth0 by DHCP in the
// background, then leaves init waiting. Busybox init halts on SIGPWR/SIGUSR1,
// so Incus's graceful stop works.
const busyboxRC = `#!/bin/sh
ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
  udhcpc -b -q -i eth0 -s /etc/udhcpc.script -t 30 -T 1 -A 1 >/dev/null 2>&1 &
fi
`

const busyboxInittab = `::sysinit:/etc/init.d/rcS
::shutdown:/bin/busybox kill -TERM -1
`

// udhcpcScript configures what the DHCP server hands out; busybox-static
// ships no default script.
const udhcpcScript = `#!/bin/sh
case "$1" in
  deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip -4 addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip -4 route replace default via "${router%% *}" dev "$interface"
    : > /etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done ;;
esac
exit 0
`

// Busybox returns the system tarball (an uncompressed tar, entries named
// "./...", as Debusine stores them) of a busybox system built from the
// host's busybox-static: every applet linked to BusyboxPath as
// /sbin/init and the rest, an init that brings up eth0 by DHCP when there
// is one, root and nobody in /etc/passwd. About a megabyte, made in memory
// in milliseconds.
func Busybox() ([]byte, error) {
	bb, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return nil, fmt.Errorf("%w: read %s (package busybox-static): %v", ErrMissingTool, BusyboxPath, err)
	}
	list, err := exec.Command(BusyboxPath, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list-full: %w", BusyboxPath, err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	now := time.Now()
	add := func(h *tar.Header, body []byte) {
		h.Name = "./" + h.Name
		h.ModTime = now
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(body))
		}
		if err == nil {
			err = tw.WriteHeader(h)
		}
		if err == nil && len(body) > 0 {
			_, err = tw.Write(body)
		}
	}
	add(&tar.Header{Name: "", Mode: 0o755, Typeflag: tar.TypeDir}, nil)
	for _, d := range []string{"bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "etc/init.d", "proc", "sys", "dev", "run", "root", "home", "var", "tmp"} {
		mode := int64(0o755)
		if d == "tmp" {
			mode = 0o1777
		}
		add(&tar.Header{Name: d + "/", Mode: mode, Typeflag: tar.TypeDir}, nil)
	}
	add(&tar.Header{Name: "bin/busybox", Mode: 0o755, Typeflag: tar.TypeReg}, bb)
	for _, applet := range strings.Fields(string(list)) {
		if applet == "bin/busybox" {
			continue
		}
		add(&tar.Header{Name: applet, Linkname: BusyboxPath, Mode: 0o777, Typeflag: tar.TypeSymlink}, nil)
	}
	for _, f := range []struct {
		name string
		mode int64
		body string
	}{
		{"etc/init.d/rcS", 0o755, busyboxRC},
		{"etc/inittab", 0o644, busyboxInittab},
		{"etc/udhcpc.script", 0o755, udhcpcScript},
		{"etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"},
		{"etc/group", 0o644, "root:x:0:\nnogroup:x:65534:\n"},
		{"etc/hostname", 0o644, "busybox\n"},
	} {
		add(&tar.Header{Name: f.name, Mode: f.mode, Typeflag: tar.TypeReg}, []byte(f.body))
	}
	if err == nil {
		err = tw.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("imagetest: busybox tarball: %w", err)
	}
	return buf.Bytes(), nil
}
