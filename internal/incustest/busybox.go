package incustest

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/incusexec/incusexec/internal/testimage"

	incus "github.com/lxc/incus/v6/client"
	"github.com/lxc/incus/v6/shared/api"
)

// BusyboxAlias is the alias under which BusyboxImage imports the image.
const BusyboxAlias = "incustest/busybox"

var busyboxOnce sync.Map // *Daemon -> *busyboxResult

type busyboxResult struct {
	once sync.Once
	fp   string
	err  error
}

// BusyboxImage imports the busybox image into the daemon once (later calls
// return the same fingerprint) under BusyboxAlias.
func (d *Daemon) BusyboxImage(t testing.TB) string {
	t.Helper()
	v, _ := busyboxOnce.LoadOrStore(d, &busyboxResult{})
	r := v.(*busyboxResult)
	r.once.Do(func() { r.fp, r.err = d.ImportUnified(context.Background(), BusyboxAlias, nil) })
	if r.err != nil {
		t.Fatalf("import busybox image: %v", r.err)
	}
	return r.fp
}

// ImportUnified imports a unified image tarball (the busybox one when data
// is nil) under alias and returns its fingerprint.
func (d *Daemon) ImportUnified(ctx context.Context, alias string, data []byte) (string, error) {
	if data == nil {
		var err error
		if data, err = testimage.BusyboxTarball(); err != nil {
			return "", err
		}
	}
	op, err := d.Client.CreateImage(api.ImagesPost{
		Aliases: []api.ImageAlias{{Name: alias}},
	}, &incus.ImageCreateArgs{MetaFile: bytes.NewReader(data), MetaName: "image.tar"})
	if err != nil {
		return "", err
	}
	if err := op.WaitContext(ctx); err != nil {
		return "", err
	}
	fp, _ := op.Get().Metadata["fingerprint"].(string)
	if fp == "" {
		return "", fmt.Errorf("image import of %s returned no fingerprint", alias)
	}
	return fp, nil
}
