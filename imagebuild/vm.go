package imagebuild

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
)

// vmDisk returns the qcow2 stream of a virtual-machine image: src itself
// when it is qcow2, or a qcow2 converted by qemu-img from a raw disk file
// (into a temporary file that cleanup removes: qemu-img needs seekable
// files).
func vmDisk(ctx context.Context, src Source, r io.Reader) (disk io.Reader, cleanup func(), err error) {
	c, br, err := sniff(r)
	if err != nil {
		return nil, nil, err
	}
	if c == QCOW2 {
		return br, func() {}, nil
	}
	if c != None {
		return nil, nil, fmt.Errorf("%w: %s-compressed input is not a disk image", ErrBadArchive, c)
	}
	head := make([]byte, 512)
	n, _ := io.ReadFull(br, head)
	if n >= 262 && bytes.HasPrefix(head[257:], []byte("ustar")) {
		return nil, nil, fmt.Errorf("%w: a tar archive is not a disk image", ErrBadArchive)
	}
	if src.Path == "" {
		return nil, nil, fmt.Errorf("%w: a raw disk must come from a file (qemu-img cannot convert a stream)", ErrBadSource)
	}
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		return nil, nil, fmt.Errorf("%w: raw disk %s needs qemu-img to become qcow2", ErrBadSource, src.Path)
	}
	dir, err := os.MkdirTemp("", "incusexec-imagebuild-")
	if err != nil {
		return nil, nil, err
	}
	removeDir := func() { os.RemoveAll(dir) }
	cleanup = removeDir
	out := filepath.Join(dir, "rootfs.img")
	cmd := exec.CommandContext(ctx, qemuImg, "convert", "-q", "-f", "raw", "-O", "qcow2", src.Path, out)
	if b, err := cmd.CombinedOutput(); err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("%w: qemu-img convert %s: %v: %s", ErrBadArchive, src.Path, err, bytes.TrimSpace(b))
	}
	f, err := os.Open(out)
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	return f, func() { f.Close(); removeDir() }, nil
}
