package incus_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/incusexec/incusexec/executor/incus"
	"github.com/incusexec/incusexec/imagebuild/imagetest"

	"github.com/matryer/is"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/executor/executortest"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/incusexec/incusexec/netbridge"
)

// TestDebusineFlowOnDebian assembles every part from one Config: the system
// tarball becomes artifact/<ID> (imagebuild), a NAT-less bridge and the
// Debusine profile are made sure of (netbridge), an ephemeral instance waits
// for systemd (instance), a host directory is mounted (mount); the task runs
// as _debusine, made by useradd; then everything is removed again.
func TestDebusineFlowOnDebian(t *testing.T) {
	is := is.New(t)
	d := incustest.Shared(t)
	tarball := incustest.DebianTarball(t, imagetest.HostSuite())
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	suffix := incustest.UniqueName("")[:6]
	owner := "executortest-debian-" + suffix
	profile := netbridge.DebusineProfile(owner, "", d.Pool)
	profile.Name = "debusine-" + suffix
	b, err := incus.NewBackend(ctx, incus.Config{
		Client:       d.Client,
		Owner:        owner,
		Prefix:       "deb-",
		Network:      &netbridge.NetworkSpec{Prefix: "ie" + suffix, NAT: false},
		Profile:      &profile,
		Profiles:     []string{},
		Ready:        instance.Ready{Systemd: true, Timeout: 2 * time.Minute},
		AllowedRoots: []string{os.TempDir()},
	})
	is.NoErr(err)
	defer b.Close()
	defer func() {
		changes, err := b.Cleanup(context.WithoutCancel(ctx))
		is.NoErr(err)              // bridge and profile removed
		is.True(len(changes) >= 2) // the bridge and the profile
	}()
	is.True(b.Network() != nil && len(b.Network().Changes) > 0) // the bridge was created

	ex, err := b.Executor(incus.Image{ID: "executortest-" + suffix, Tarball: tarball})
	is.NoErr(err)
	is.Equal(ex.Image(), "artifact/executortest-"+suffix)
	is.NoErr(ex.Available(ctx))
	is.NoErr(ex.EnsureImage(ctx))
	defer func() { is.NoErr(ex.RemoveImage(context.WithoutCancel(ctx))) }()
	is.Equal(ex.AutopkgtestArgs(), []string{ex.Image(), "--", "--profile", profile.Name})

	inst, err := ex.Create(ctx, executor.Spec{ID: "work-request-1", Ephemeral: true})
	is.NoErr(err)
	defer inst.Delete(context.WithoutCancel(ctx))
	is.NoErr(inst.Start(ctx)) // waits for systemd

	user, err := inst.EnsureUser(ctx, "_debusine")
	is.NoErr(err)
	is.True(user.UID > 0 && user.UID < 1000) // useradd --system

	src := t.TempDir()
	is.NoErr(os.WriteFile(filepath.Join(src, "input.txt"), []byte("input\n"), 0o644))
	is.NoErr(inst.PushTree(ctx, src, "/build/src", executor.FileOptions{UID: user.UID, GID: user.GID}))
	shared := t.TempDir()
	is.NoErr(os.Chmod(shared, 0o755))
	is.NoErr(os.WriteFile(filepath.Join(shared, "shared.txt"), []byte("shared\n"), 0o644))
	data, err := inst.Mount(ctx, "executortest/shared", shared, executor.MountOptions{ReadOnly: true})
	is.NoErr(err)

	var stderr bytes.Buffer
	code, err := inst.Exec(ctx, executor.Cmd{
		Args: []string{"sh", "-c", "cat input.txt " + data + "/shared.txt > output.txt"},
		Dir:  "/build/src", User: user.Name, Stderr: &stderr,
	})
	is.NoErr(err)
	if code != 0 {
		t.Fatalf("build-like command exited with %d: %s", code, stderr.String())
	}
	var out bytes.Buffer
	info, err := inst.Pull(ctx, "/build/src/output.txt", &out)
	is.NoErr(err)
	is.Equal(out.String(), "input\nshared\n")
	is.Equal(info.UID, user.UID)
	is.NoErr(inst.Unmount(ctx, "executortest/shared"))

	stats, err := ex.Statistics(ctx, inst)
	is.NoErr(err)
	is.True(stats.CPUs > 0 && stats.MemoryUsed > 0)
	t.Logf("statistics %+v; autopkgtest %s", stats, strings.Join(ex.AutopkgtestArgs(), " "))

	is.NoErr(inst.Stop(ctx))
	list, err := ex.List(ctx)
	is.NoErr(err)
	is.True(!slices.Contains(list, inst.Name())) // the ephemeral instance is gone
}

// TestConformanceIncusDebian runs the suite's checks whose outcome the
// image decides on the Debian systemd image, with readiness by systemd,
// as a Debusine worker runs it. The others (files, streams, mounts,
// signals, stats: the server's API, whatever the image) have passed on
// busybox here and on the cluster; each check is one boot, and a Debian
// boot is the dearest thing the package's tests do.
func TestConformanceIncusDebian(t *testing.T) {
	if testing.Short() {
		t.Skip("the busybox run covers the backend; -short skips the Debian one")
	}
	d := incustest.Shared(t)
	alias := d.DebianImage(t)
	profile := d.DebianProfile(t)
	b, err := incus.NewBackend(t.Context(), incus.Config{
		Client:       d.Client,
		Owner:        incustest.UniqueName("executortest-"),
		Profiles:     []string{profile},
		Ready:        instance.Ready{Systemd: true, Timeout: 2 * time.Minute},
		AllowedRoots: []string{os.TempDir()},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	executortest.Run(t, func(t *testing.T) executor.Executor {
		ex, err := b.Executor(incus.Image{Alias: alias})
		if err != nil {
			t.Fatal(err)
		}
		return ex
	}, executortest.Options{Only: []string{"Image", "Lifecycle", "Ephemeral", "Environment", "Users"}})
}
