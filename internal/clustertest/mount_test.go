package clustertest_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/incusexec/incusexec/executor"
	mountincus "github.com/incusexec/incusexec/mount/incus"

	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/incusexec/incusexec/mount"
	"github.com/matryer/is"
)

// TestClusterSharedMount shares one host directory with instances on two
// members of the three-member cluster (here the members share this
// machine's file system, as members with a shared file system would), and
// shows what happens when the source is missing on the member that hosts
// the instance: Acquire fails with ErrSourceMissing naming the member and the
// path, and attaches nothing.
func TestClusterSharedMount(t *testing.T) {
	is := is.New(t)
	c := incustest.SharedCluster(t)
	c.BusyboxImage(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	owner := incustest.UniqueName("mnt-")
	im, err := instance.New(c.Client, instance.Config{Owner: owner, StopGrace: time.Second})
	is.NoErr(err)
	t.Cleanup(func() {
		if _, err := im.GC(context.Background(), instance.GCOptions{}); err != nil {
			t.Errorf("GC: %v", err)
		}
		im.Close()
	})
	var ins []*instance.Instance
	for _, mem := range c.Members[1:] {
		in, err := im.Create(ctx, instance.Spec{Image: incustest.BusyboxAlias, Target: mem.Name})
		is.NoErr(err)
		ins = append(ins, in)
	}

	root := t.TempDir()
	src := filepath.Join(root, "shared")
	is.NoErr(os.Mkdir(src, 0o755))
	is.NoErr(os.Chmod(src, 0o777)) // the containers' root is nobody here
	mm, err := mountincus.New(mountincus.Config{Client: c.Client, AllowedRoots: []string{root}, Owner: owner})
	is.NoErr(err)
	const alias = "cluster/shared"
	p := mount.Path(alias)

	// Both instances hold the alias; what one writes the other reads.
	var handles []mount.Handle
	for _, in := range ins {
		h, err := mm.Acquire(ctx, in.Name(), alias, src, executor.MountOptions{})
		is.NoErr(err)
		handles = append(handles, h)
	}
	code, err := ins[0].Exec(ctx, executor.Cmd{Args: []string{"sh", "-c", "echo from-member2 >" + p + "/note"}})
	is.NoErr(err)
	is.Equal(code, 0)
	var out bytes.Buffer
	code, err = ins[1].Exec(ctx, executor.Cmd{Args: []string{"cat", p + "/note"}, Stdout: &out})
	is.NoErr(err)
	is.Equal(code, 0)
	is.Equal(out.String(), "from-member2\n")
	got, err := os.ReadFile(filepath.Join(src, "note"))
	is.NoErr(err)
	is.Equal(string(got), "from-member2\n") // on the host's directory too
	for _, h := range handles {
		is.NoErr(mm.Release(ctx, h))
	}

	// A source that exists here but not on member3: hide it there under a
	// tmpfs in member3's own mount namespace.
	hidden := filepath.Join(root, "hidden")
	lonely := filepath.Join(hidden, "data")
	is.NoErr(os.MkdirAll(lonely, 0o755))
	member3 := c.Members[2]
	if out, err := member3.Command(ctx, "mount", "-t", "tmpfs", "tmpfs", hidden).CombinedOutput(); err != nil {
		t.Fatalf("hide %s on %s: %v: %s", hidden, member3.Name, err, out)
	}
	t.Cleanup(func() {
		if out, err := member3.Command(context.Background(), "umount", hidden).CombinedOutput(); err != nil {
			t.Errorf("umount %s on %s: %v: %s", hidden, member3.Name, err, out)
		}
	})
	is.True(member3.Command(ctx, "test", "-d", lonely).Run() != nil) // gone on member3

	_, err = mm.Acquire(ctx, ins[1].Name(), "cluster/lonely", lonely, executor.MountOptions{})
	t.Logf("acquire of a source missing on %s: %v", member3.Name, err)
	is.True(errors.Is(err, mount.ErrSourceMissing))
	is.True(strings.Contains(err.Error(), member3.Name))
	is.True(strings.Contains(err.Error(), lonely))
	mounts, err := mm.Mounts(ctx, ins[1].Name())
	is.NoErr(err)
	is.Equal(len(mounts), 0) // nothing attached, no hold recorded

	// The instance on member2, where the source exists, can have it.
	h, err := mm.Acquire(ctx, ins[0].Name(), "cluster/lonely", lonely, executor.MountOptions{})
	is.NoErr(err)
	is.NoErr(mm.Release(ctx, h))
}
