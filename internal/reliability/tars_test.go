package reliability_test

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"io"
	"sync/atomic"
	"time"
)

// tinyRootfs is the smallest root filesystem imagebuild accepts: a root
// directory and an /sbin/init, plus a file of pad bytes.
func tinyRootfs(pad int64) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, d := range []string{"./", "./sbin/", "./tmp/"} {
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: time.Unix(1e9, 0)})
	}
	init := []byte("#!/bin/sh\nexit 0\n")
	_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "./sbin/init", Mode: 0o755, Size: int64(len(init)), ModTime: time.Unix(1e9, 0)})
	_, _ = tw.Write(init)
	if pad > 0 {
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "./pad", Mode: 0o644, Size: pad, ModTime: time.Unix(1e9, 0)})
		_, _ = io.CopyN(tw, zeros{}, pad)
	}
	_ = tw.Close()
	return b.Bytes()
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// trickle yields data slowly and without end (a tar stream's header
// followed by an endless file), so that a call reading it is certainly in
// flight when the daemon goes away. Read counts what was handed out.
type trickle struct {
	head []byte
	read atomic.Int64
}

func newTrickle() *trickle {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "./", Mode: 0o755})
	_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "./big", Mode: 0o644, Size: 1 << 30})
	_ = tw.Flush()
	return &trickle{head: b.Bytes()}
}

func (t *trickle) Read(p []byte) (int, error) {
	if len(t.head) > 0 {
		n := copy(p, t.head)
		t.head = t.head[n:]
		t.read.Add(int64(n))
		return n, nil
	}
	time.Sleep(20 * time.Millisecond)
	n := min(len(p), 32<<10)
	clear(p[:n])
	t.read.Add(int64(n))
	return n, nil
}

func sha256sum(b []byte) [32]byte { return sha256.Sum256(b) }
