package clustertest_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/imagebuild"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/incusexec/incusexec/internal/testimage"
	"github.com/lxc/incus/v6/shared/api"
	"github.com/matryer/is"
)

// busyboxRootfs re-roots the busybox test image's rootfs/ at "./": a small
// system tarball that boots.
func busyboxRootfs(t *testing.T) []byte {
	t.Helper()
	unified, err := testimage.BusyboxTarball()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	tr := tar.NewReader(bytes.NewReader(unified))
	tw := tar.NewWriter(&out)
	rel := func(name string) (string, bool) {
		name = strings.TrimPrefix(name, "./")
		if name != "rootfs" && name != "rootfs/" && !strings.HasPrefix(name, "rootfs/") {
			return "", false
		}
		return "./" + strings.TrimPrefix(strings.TrimPrefix(name, "rootfs"), "/"), true
	}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name, ok := rel(h.Name)
		if !ok {
			continue
		}
		h.Name = name
		if h.Typeflag == tar.TypeLink {
			if h.Linkname, ok = rel(h.Linkname); !ok {
				t.Fatalf("hard link %s outside rootfs", h.Name)
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// TestClusterImportOnceLaunchEverywhere imports a system tarball once
// through one member of the three-member cluster (over HTTPS), and
// launches it on every member: the cluster holds one image, which each
// member fetches from the others as it needs it. A second import finds it.
func TestClusterImportOnceLaunchEverywhere(t *testing.T) {
	is := is.New(t)
	c := incustest.SharedCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	im := &imagebuild.Importer{Client: c.Client, LockDir: filepath.Join(os.TempDir(), "imagebuild-test-locks")}
	id := incustest.UniqueName("cluster-")
	before, err := c.Client.GetImageFingerprints()
	is.NoErr(err)

	rootfs := busyboxRootfs(t)
	img, err := im.Import(ctx, imagebuild.Source{ID: id, Reader: bytes.NewReader(rootfs)}, imagebuild.Options{})
	is.NoErr(err)
	t.Cleanup(func() {
		if err := im.Delete(context.Background(), img.Alias); err != nil {
			t.Error(err)
		}
	})
	after, err := c.Client.GetImageFingerprints()
	is.NoErr(err)
	is.Equal(len(after), len(before)+1) // one image for the whole cluster
	is.True(slices.Contains(after, img.Fingerprint))

	again, err := im.Import(ctx, imagebuild.Source{ID: id, Reader: bytes.NewReader(rootfs)}, imagebuild.Options{})
	is.NoErr(err)
	is.True(again.Reused)
	is.Equal(again.Fingerprint, img.Fingerprint)

	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, mem := range c.Members {
		wg.Go(func() {
			err := launchOn(ctx, c, mem.Name, img.Alias)
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		})
	}
	wg.Wait()
	is.NoErr(errors.Join(errs...))
}

// launchOn creates and starts an instance of alias on member, checks that
// it runs there and that a command runs in it, and deletes it.
func launchOn(ctx context.Context, c *incustest.Cluster, member, alias string) (err error) {
	name := incustest.UniqueName("img-")
	client := c.Client.UseTarget(member)
	op, err := client.CreateInstance(api.InstancesPost{
		Name: name, Source: api.InstanceSource{Type: "image", Alias: alias}, Start: true,
	})
	if err == nil {
		err = op.WaitContext(ctx)
	}
	defer func() {
		if op, derr := c.Client.UpdateInstanceState(name, api.InstanceStatePut{Action: "stop", Force: true, Timeout: -1}, ""); derr == nil {
			_ = op.WaitContext(ctx)
		}
		if op, derr := c.Client.DeleteInstance(name); derr == nil {
			err = errors.Join(err, op.WaitContext(ctx))
		}
	}()
	if err != nil {
		return err
	}
	inst, _, err := c.Client.GetInstance(name)
	if err != nil {
		return err
	}
	if inst.Location != member {
		return errors.New(name + " runs on " + inst.Location + ", not " + member)
	}
	m, err := instance.New(c.Client, instance.Config{Owner: "clustertest"})
	if err != nil {
		return err
	}
	defer m.Close()
	var stdout strings.Builder
	code, err := m.Instance(name).Exec(ctx, executor.Cmd{Args: []string{"cat", "/etc/hostname"}, Stdout: &stdout})
	if err == nil && code != 0 {
		err = fmt.Errorf("cat /etc/hostname exited %d", code)
	}
	if err != nil {
		return err
	}
	out := stdout.String()
	if strings.TrimSpace(out) != name {
		return errors.New(name + " on " + member + ": /etc/hostname says " + out)
	}
	return nil
}
