package testimage

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/incusexec/incusexec/imagebuild/imagetest"
)

// BusyboxTarball returns the busybox system of imagetest.Busybox as a
// unified Incus image tarball: metadata.yaml and a hostname template, and
// the root filesystem under rootfs/.
func BusyboxTarball() ([]byte, error) {
	system, err := imagetest.Busybox()
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	now := time.Now()
	meta := fmt.Sprintf("architecture: x86_64\ncreation_date: %d\nproperties:\n  description: incustest busybox\n  os: busybox\n"+
		"templates:\n  /etc/hostname:\n    when: [create, copy]\n    template: hostname.tpl\n", now.Unix())
	for _, f := range []struct {
		h    tar.Header
		body string
	}{
		{tar.Header{Name: "metadata.yaml", Mode: 0o644, Typeflag: tar.TypeReg}, meta},
		{tar.Header{Name: "templates/", Mode: 0o755, Typeflag: tar.TypeDir}, ""},
		{tar.Header{Name: "templates/hostname.tpl", Mode: 0o644, Typeflag: tar.TypeReg}, "{{ instance.name }}\n"},
	} {
		f.h.ModTime, f.h.Size = now, int64(len(f.body))
		if err := tw.WriteHeader(&f.h); err != nil {
			return nil, err
		}
		if _, err := tw.Write([]byte(f.body)); err != nil {
			return nil, err
		}
	}
	tr := tar.NewReader(bytes.NewReader(system))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		h.Name = "rootfs/" + strings.TrimPrefix(h.Name, "./")
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
