package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/lxc/incus/v6/shared/api"
	"github.com/matryer/is"

	"github.com/incusexec/incusexec/imagebuild"
	"github.com/incusexec/incusexec/imagebuild/imagetest"
	"github.com/incusexec/incusexec/internal/incustest"
)

// TestImageImportProfile: `image import --profile P` puts P on the image
// record, so that creating an instance from the alias without naming
// profiles (incus init ALIAS NAME) gives it P's NIC; in both modes.
func TestImageImportProfile(t *testing.T) {
	d := incustest.Shared(t)
	ctx := t.Context()
	tarball, err := imagetest.Busybox()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "busybox.tar")
	if err := os.WriteFile(path, tarball, 0o644); err != nil {
		t.Fatal(err)
	}
	profile := incustest.UniqueName("cliprof")
	if err := d.Client.CreateProfile(api.ProfilesPost{Name: profile, ProfilePut: api.ProfilePut{Devices: map[string]map[string]string{
		"root": {"type": "disk", "path": "/", "pool": d.Pool},
		"net1": {"type": "nic", "network": d.Network, "name": "eth1"},
	}}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Client.DeleteProfile(profile); err != nil {
			t.Errorf("delete profile %s: %v", profile, err)
		}
	})
	for _, mode := range []string{"split", "unified"} {
		t.Run(mode, func(t *testing.T) {
			is := is.New(t)
			id := incustest.UniqueName("cli-prof")
			r := incusexec(t, ctx, d, "", "--json", "image", "import", path, "--alias", id, "--mode", mode, "--profile", profile)
			is.Equal(r.code, 0)
			var img struct{ Alias, Fingerprint string }
			is.NoErr(json.Unmarshal([]byte(r.stdout), &img))
			defer func() { is.Equal(incusexec(t, ctx, d, "", "image", "rm", img.Alias).code, 0) }()
			got, _, err := d.Client.GetImage(img.Fingerprint)
			is.NoErr(err)
			is.Equal(got.Profiles, []string{profile})

			name := incustest.UniqueName("cli-prof")
			op, err := d.Client.CreateInstance(api.InstancesPost{Name: name, Type: api.InstanceTypeContainer,
				Source: api.InstanceSource{Type: "image", Alias: imagebuild.AliasPrefix + id}})
			is.NoErr(err)
			is.NoErr(op.Wait())
			defer func() {
				op, err := d.Client.DeleteInstance(name)
				is.NoErr(err)
				is.NoErr(op.Wait())
			}()
			inst, _, err := d.Client.GetInstance(name)
			is.NoErr(err)
			is.Equal(inst.ExpandedDevices["net1"]["network"], d.Network)
		})
	}
}
