package reliability_test

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/lxc/incus/v6/shared/api"
	"github.com/matryer/is"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/imagebuild"
	"github.com/incusexec/incusexec/imagebuild/imagetest"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/internal/incustest"
)

// smallPool is the size of the btrfs pool of TestDiskFull: the smallest
// round size Incus can format (mkfs.btrfs refuses less than 114294784
// bytes, 109 MiB, and Incus passes that on: 64MiB fails).
const smallPool = "128MiB"

// TestDiskFull fills a tiny btrfs pool during an import (images stored on
// the pool through storage.images_volume) and during a push: each fails
// with an error saying the disk is full, the import leaves no image and no
// alias, and the instance and the daemon work on afterwards.
func TestDiskFull(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	tarball := incustest.DebianTarball(t, imagetest.HostSuite()) // 164 MB, more than the pool
	d := incustest.Private(t, incustest.Options{Pool: "btrfs", PoolSize: smallPool, NoNetwork: true})
	c := d.Client
	ctx := ctxFor(t, 5*time.Minute)

	// Images on the pool, so that an upload fills it.
	is.NoErr(c.CreateStoragePoolVolume(d.Pool, api.StorageVolumesPost{Name: "images", Type: "custom"}))
	srv, _, err := c.GetServer()
	is.NoErr(err)
	put := srv.Writable()
	put.Config["storage.images_volume"] = d.Pool + "/images"
	is.NoErr(c.UpdateServer(put, ""))
	t.Cleanup(func() {
		srv, _, err := c.GetServer()
		if err == nil {
			put := srv.Writable()
			delete(put.Config, "storage.images_volume")
			_ = c.UpdateServer(put, "")
		}
	})
	d.BusyboxImage(t)
	imagesBefore, err := c.GetImages()
	is.NoErr(err)

	importer := &imagebuild.Importer{Client: c, LockDir: t.TempDir()}
	id := incustest.UniqueName("full-")
	_, err = importer.Import(ctx, imagebuild.Source{ID: id, Path: tarball}, imagebuild.Options{})
	t.Logf("import into the full pool: %v", err)
	is.True(err != nil)
	is.True(strings.Contains(strings.ToLower(err.Error()), "no space left on device"))
	alias, err := imagebuild.Alias(id)
	is.NoErr(err)
	_, _, err = c.GetImageAlias(alias)
	is.True(api.StatusErrorCheck(err, 404)) // no alias
	imagesAfter, err := c.GetImages()
	is.NoErr(err)
	is.Equal(len(imagesAfter), len(imagesBefore)) // no half image

	// Space back: the upload's temporary file went with the failure.
	m, err := instance.New(c, instance.Config{Owner: incustest.UniqueName("full-"), StopGrace: 5 * time.Second})
	is.NoErr(err)
	defer m.Close()
	in, err := m.Create(ctx, instance.Spec{Image: incustest.BusyboxAlias})
	is.NoErr(err)
	t.Cleanup(func() { _ = in.Delete(ctxFor(t, time.Minute)) })

	big := io.LimitReader(zeros{}, 512<<20) // twice the pool
	err = in.Push(ctx, "/root/big", big, executor.FileOptions{})
	t.Logf("push into the full pool: %v", err)
	is.True(err != nil)
	is.True(strings.Contains(strings.ToLower(err.Error()), "space") || strings.Contains(strings.ToLower(err.Error()), "quota"))
	var out, errs bytes.Buffer
	code, err := in.Exec(ctx, executor.Cmd{Args: []string{"sh", "-c", "test ! -e /root/big && echo ok > /root/small && cat /root/small"}, Stdout: &out, Stderr: &errs})
	is.NoErr(err)
	t.Logf("after the failed push: %s %s", out.String(), errs.String())
	is.Equal(code, 0)
	is.Equal(out.String(), "ok\n") // no partial file holds the space: the instance writes again
	// The daemon imports again once there is room.
	img, err := importer.Import(ctx, imagebuild.Source{ID: incustest.UniqueName("room-"), Reader: bytes.NewReader(tinyRootfs(0))}, imagebuild.Options{})
	is.NoErr(err)
	is.NoErr(importer.Delete(ctx, img.Alias))
}
