package instance_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-multierror"
	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/lxc/incus/v6/shared/api"
	"github.com/matryer/is"
)

// The cluster tests share the test binary's three-member cluster and talk
// to it as a remote host would: over HTTPS with a trusted client
// certificate (Cluster.Client). They do not run in parallel with each other:
// the scheduler test counts instances per member, and the member-down test
// stops a member.

// clusterManager returns the shared cluster and a manager of an owner of
// its own on the cluster's HTTPS client.
func clusterManager(t *testing.T) (*incustest.Cluster, *instance.Manager, *logBuffer) {
	t.Helper()
	c := incustest.SharedCluster(t)
	c.BusyboxImage(t)
	logs := &logBuffer{}
	m, err := instance.New(c.Client, instance.Config{
		Owner:     incustest.UniqueName("owner-"),
		StopGrace: time.Second,
		Logger:    slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if _, err := m.GC(ctx, instance.GCOptions{}); err != nil {
			t.Errorf("GC at the end: %v", err)
		}
		m.Close()
	})
	return c, m, logs
}

func location(t *testing.T, in *instance.Instance) string {
	t.Helper()
	loc, err := in.Location(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// TestClusterPlacement places instances on each member by name, on a
// cluster group with "@group", and by the scheduler, and checks that each
// reports the member it landed on; the image imported once serves every
// member.
func TestClusterPlacement(t *testing.T) {
	c, m, _ := clusterManager(t)
	ctx := ctxFor(t, 3*time.Minute)
	fp := c.BusyboxImage(t)

	t.Run("scheduler", func(t *testing.T) {
		is := is.New(t)
		count := func() map[string]int {
			insts, err := c.Client.GetInstances(api.InstanceTypeAny)
			is.NoErr(err)
			n := map[string]int{}
			for _, in := range insts {
				n[in.Location]++
			}
			return n
		}
		before := count()
		// Incus's default placement puts each new instance on the online
		// member with the fewest instances (those created plus creations
		// in flight). What it promises, and what is asserted: all three
		// members get some. (Run first: right after other creations and
		// deletions it was seen to give 3/2/1 rather than 2/2/2.)
		// Not started: placement counts instances whatever their state,
		// and six boots would prove nothing more.
		for range 6 {
			in, err := m.Create(ctx, instance.Spec{Image: incustest.BusyboxAlias, NoStart: true})
			is.NoErr(err)
			is.True(location(t, in) != "")
		}
		after := count()
		added := map[string]int{}
		for _, mem := range c.Members {
			added[mem.Name] = after[mem.Name] - before[mem.Name]
		}
		t.Logf("scheduler placed 6 instances: %v (members had %v before)", added, before)
		for _, mem := range c.Members {
			is.True(added[mem.Name] > 0) // every member gets some
		}
		_, err := m.GC(ctx, instance.GCOptions{})
		is.NoErr(err)
	})

	t.Run("scheduler concurrent", func(t *testing.T) {
		is := is.New(t)
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			errs []error
			locs = map[string]int{}
		)
		for range 6 {
			wg.Go(func() {
				in, err := m.Create(ctx, instance.Spec{Image: incustest.BusyboxAlias, NoStart: true})
				var loc string
				if err == nil {
					loc, err = in.Location(ctx)
				}
				mu.Lock()
				defer mu.Unlock()
				errs = append(errs, err)
				locs[loc]++
			})
		}
		wg.Wait()
		is.NoErr(errors.Join(errs...))
		t.Logf("scheduler placed 6 concurrent creations: %v", locs)
		// Sent at once, the requests would all see the same counts and
		// land on one member; the manager sends them one at a time.
		for _, mem := range c.Members {
			is.True(locs[mem.Name] > 0) // every member gets some
		}
		_, err := m.GC(ctx, instance.GCOptions{})
		is.NoErr(err)
	})

	t.Run("member", func(t *testing.T) {
		is := is.New(t)
		for _, mem := range c.Members {
			in, err := m.Create(ctx, instance.Spec{Image: incustest.BusyboxAlias, Target: mem.Name})
			is.NoErr(err)
			is.Equal(location(t, in), mem.Name) // placed where asked
			st, err := in.Status(ctx)
			is.NoErr(err)
			is.Equal(st, api.Running)
			is.NoErr(in.Delete(ctx))
		}
		// One image in the cluster, imported once, launched on all three.
		imgs, err := c.Client.GetImages()
		is.NoErr(err)
		var fps []string
		for _, img := range imgs {
			fps = append(fps, img.Fingerprint)
		}
		is.Equal(fps, []string{fp})
	})

	t.Run("group", func(t *testing.T) {
		is := is.New(t)
		group := incustest.UniqueName("grp-")
		members := []string{c.Members[1].Name, c.Members[2].Name}
		is.NoErr(c.Client.CreateClusterGroup(api.ClusterGroupsPost{
			Name:            group,
			ClusterGroupPut: api.ClusterGroupPut{Description: "incusexec test", Members: members},
		}))
		t.Cleanup(func() {
			// Incus deletes only empty groups.
			_ = c.Client.UpdateClusterGroup(group, api.ClusterGroupPut{}, "")
			if err := c.Client.DeleteClusterGroup(group); err != nil {
				t.Errorf("delete cluster group %s: %v", group, err)
			}
		})
		seen := map[string]bool{}
		for range 4 {
			in, err := m.Create(ctx, instance.Spec{Image: incustest.BusyboxAlias, Target: "@" + group, NoStart: true})
			is.NoErr(err)
			loc := location(t, in)
			is.True(slices.Contains(members, loc)) // placed within the group
			seen[loc] = true
		}
		t.Logf("group %s placement: %v", group, seen)
		_, err := m.GC(ctx, instance.GCOptions{})
		is.NoErr(err)
	})

	t.Run("bad target", func(t *testing.T) {
		is := is.New(t)
		for _, target := range []string{"member9", "@no-such-group"} {
			_, err := m.Create(ctx, instance.Spec{Image: incustest.BusyboxAlias, Target: target})
			is.True(err != nil)
			t.Logf("target %s: %v", target, err)
		}
		left, err := m.List(ctx)
		is.NoErr(err)
		is.Equal(len(left), 0) // nothing half-made
	})

}

// nonLeader returns a member that is not the cluster's database leader.
func nonLeader(t *testing.T, c *incustest.Cluster) string {
	t.Helper()
	members, err := c.Client.GetClusterMembers()
	if err != nil {
		t.Fatal(err)
	}
	for _, mem := range members {
		if !slices.Contains(mem.Roles, "database-leader") {
			return mem.ServerName
		}
	}
	t.Fatal("every member leads the database")
	return ""
}

// TestClusterExecFiles runs commands and moves files and trees in an
// instance on a member other than the leader, reached through the member
// the HTTPS client talks to.
func TestClusterExecFiles(t *testing.T) {
	is := is.New(t)
	c, m, _ := clusterManager(t)
	ctx := ctxFor(t, 2*time.Minute)
	target := nonLeader(t, c)
	in, err := m.Create(ctx, instance.Spec{Image: incustest.BusyboxAlias, Target: target})
	is.NoErr(err)
	is.Equal(location(t, in), target)

	var out, errb bytes.Buffer
	code, err := in.Exec(ctx, executor.Cmd{
		Args:   []string{"sh", "-c", "cat; echo to-stderr >&2; exit 3"},
		Stdin:  strings.NewReader("from the host\n"),
		Stdout: &out, Stderr: &errb,
	})
	is.NoErr(err)
	is.Equal(code, 3)
	is.Equal(out.String(), "from the host\n")
	is.Equal(errb.String(), "to-stderr\n")

	payload := bytes.Repeat([]byte("cluster file\n"), 10000)
	is.NoErr(in.Push(ctx, "/tmp/x/payload", bytes.NewReader(payload), executor.FileOptions{Mode: 0o600, MkdirAll: true}))
	var got bytes.Buffer
	info, err := in.Pull(ctx, "/tmp/x/payload", &got)
	is.NoErr(err)
	is.Equal(got.Bytes(), payload)
	is.Equal(info.Mode.Perm(), fs.FileMode(0o600))

	tree := tarOf(t,
		tarEntry{name: "./", typ: tar.TypeDir, mode: 0o755},
		tarEntry{name: "a.txt", body: "alpha", uid: 1000, gid: 1000},
		tarEntry{name: "sub/", typ: tar.TypeDir, mode: 0o700},
		tarEntry{name: "sub/b.txt", body: "beta", mode: 0o640})
	want := listing(t, bytes.NewReader(tree.Bytes()))
	is.NoErr(in.PushTar(ctx, "/srv/tree", tree, instance.TreeOptions{}))
	var back bytes.Buffer
	is.NoErr(in.PullTar(ctx, "/srv/tree", &back))
	is.Equal(listing(t, &back), want)

	is.NoErr(in.Delete(ctx))
}

// setOfflineThreshold lowers how long the cluster waits before it calls a
// silent member offline, and restores it at the test's end.
func setOfflineThreshold(t *testing.T, c *incustest.Cluster, seconds int) {
	t.Helper()
	srv, etag, err := c.Client.GetServer()
	if err != nil {
		t.Fatal(err)
	}
	old, had := srv.Config["cluster.offline_threshold"]
	put := srv.Writable()
	put.Config["cluster.offline_threshold"] = fmt.Sprint(seconds)
	if err := c.Client.UpdateServer(put, etag); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv, etag, err := c.Client.GetServer()
		if err != nil {
			t.Error(err)
			return
		}
		put := srv.Writable()
		delete(put.Config, "cluster.offline_threshold")
		if had {
			put.Config["cluster.offline_threshold"] = old
		}
		if err := c.Client.UpdateServer(put, etag); err != nil {
			t.Error(err)
		}
	})
}

// TestClusterMemberDown stops the daemon of one member: its instances
// report an error state, launches without a target go to the others, and GC
// cleans up what it can and names the unreachable member in its errors.
// The member comes back at the end (the shared cluster keeps every member
// running) and a second GC finishes the job.
func TestClusterMemberDown(t *testing.T) {
	is := is.New(t)
	c, m, _ := clusterManager(t)
	ctx := ctxFor(t, 3*time.Minute)
	const downIdx = 2
	down := c.Members[downIdx].Name
	setOfflineThreshold(t, c, 11)

	var onDown []string
	for _, mem := range c.Members {
		in, err := m.Create(ctx, instance.Spec{Image: incustest.BusyboxAlias, Target: mem.Name})
		is.NoErr(err)
		if mem.Name == down {
			onDown = append(onDown, in.Name())
		}
	}

	is.NoErr(c.StopMember(ctx, downIdx))
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := c.StartMember(ctx, downIdx); err != nil {
				t.Errorf("restart %s: %v", down, err)
			}
		}
	})
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	is.NoErr(c.WaitMemberStatus(wctx, down, "Offline"))
	cancel()

	// Its instances: listed in an error state; a handle cannot reach them.
	insts, err := c.Client.GetInstances(api.InstanceTypeAny)
	is.NoErr(err)
	for _, inst := range insts {
		if inst.Location == down {
			is.Equal(inst.Status, "Error")
		}
	}
	_, err = m.Instance(onDown[0]).Status(ctx)
	t.Logf("status of %s on stopped %s: %v", onDown[0], down, err)
	is.True(errors.Is(err, instance.ErrUnavailable))
	is.True(errors.Is(err, executor.ErrUnavailable)) // what a host tests for

	// Creations without a target land on the members still up (not
	// started: where they land is the point).
	for range 3 {
		in, err := m.Create(ctx, instance.Spec{Image: incustest.BusyboxAlias, NoStart: true})
		is.NoErr(err)
		loc := location(t, in)
		is.True(loc != down)
	}

	// GC: everything but the instance on the stopped member goes, and the
	// error names that member and that instance.
	deleted, err := m.GC(ctx, instance.GCOptions{})
	t.Logf("GC with %s down: deleted %v, err %v", down, deleted, err)
	is.Equal(len(deleted), 5)
	is.True(!slices.Contains(deleted, onDown[0]))
	var merr *multierror.Error
	is.True(errors.As(err, &merr))
	is.Equal(len(merr.Errors), 1)
	is.True(strings.Contains(err.Error(), onDown[0]))
	is.True(strings.Contains(err.Error(), "cluster member "+down))
	is.True(errors.Is(err, instance.ErrUnavailable))
	is.True(errors.Is(err, executor.ErrUnavailable))

	is.NoErr(c.StartMember(ctx, downIdx))
	restarted = true
	deleted, err = m.GC(ctx, instance.GCOptions{})
	is.NoErr(err)
	is.Equal(deleted, onDown)
}

// TestClusterUntrustedClient connects over HTTPS with a certificate the
// cluster does not trust: creating an instance fails and nothing is made.
func TestClusterUntrustedClient(t *testing.T) {
	is := is.New(t)
	c, trusted, _ := clusterManager(t)
	cert, key, err := incustest.NewClientCertificate("stranger")
	is.NoErr(err)
	client, err := c.ConnectHTTPS(1, cert, key)
	is.NoErr(err)
	defer client.Disconnect()
	m, err := instance.New(client, instance.Config{Owner: trusted.Owner()})
	is.NoErr(err)
	defer m.Close()
	_, err = m.Create(ctxFor(t, time.Minute), instance.Spec{Image: incustest.BusyboxAlias})
	is.True(err != nil)
	t.Logf("untrusted create: %v", err)
	left, err := trusted.List(t.Context())
	is.NoErr(err)
	is.Equal(len(left), 0)
}
