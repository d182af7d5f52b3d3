package imagebuild_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/incusexec/incusexec/imagebuild"
	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/lxc/incus/v6/shared/api"
	"github.com/matryer/is"
)

// TestImageCarriesProfiles imports images with Metadata.Profiles in every
// mode and type and checks that the server's image record lists them and
// that an instance created from the alias without a profile list gets the
// profile's NIC; a missing profile is refused before anything is uploaded.
func TestImageCarriesProfiles(t *testing.T) {
	d := incustest.Shared(t)
	im := newImporter(t, d)
	ctx := context.Background()
	profile := incustest.UniqueName("imgprof-")
	err := d.Client.CreateProfile(api.ProfilesPost{Name: profile, ProfilePut: api.ProfilePut{
		Description: "imagebuild test: a profile images point at",
		Devices: map[string]map[string]string{
			"root": {"type": "disk", "path": "/", "pool": d.Pool},
			"net1": {"type": "nic", "network": d.Network, "name": "eth1"},
		}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Client.DeleteProfile(profile); err != nil {
			t.Errorf("delete profile %s: %v", profile, err)
		}
	})

	type source struct {
		name string
		open func(t *testing.T) imagebuild.Source
		opts imagebuild.Options
	}
	tiny := func(t *testing.T) imagebuild.Source {
		return imagebuild.Source{Reader: bytes.NewReader(tinyRootfs(t, "init"))}
	}
	cases := []source{
		{"split", tiny, imagebuild.Options{Mode: imagebuild.Split}},
		{"unified", tiny, imagebuild.Options{Mode: imagebuild.Unified, Compression: imagebuild.Zstd}},
		{"vm", func(t *testing.T) imagebuild.Source {
			if _, err := exec.LookPath("qemu-img"); err != nil {
				t.Skip("qemu-img not installed")
			}
			raw := filepath.Join(t.TempDir(), "disk.raw")
			if err := os.WriteFile(raw, bytes.Repeat([]byte{0}, 1<<20), 0o644); err != nil {
				t.Fatal(err)
			}
			return imagebuild.Source{Path: raw}
		}, imagebuild.Options{Type: imagebuild.VirtualMachine}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			src := tc.open(t)
			src.ID = incustest.UniqueName("prof-")
			src.Metadata.Profiles = []string{profile}
			img, err := im.Import(ctx, src, tc.opts)
			is.NoErr(err)
			defer func() { is.NoErr(im.Delete(ctx, img.Alias)) }()
			got, _, err := d.Client.GetImage(img.Fingerprint)
			is.NoErr(err)
			is.Equal(got.Profiles, []string{profile}) // on the record, where Incus reads them
			if tc.opts.Type == imagebuild.VirtualMachine {
				return // creating a VM needs KVM; the record is what init reads
			}
			name := incustest.UniqueName("prof-")
			op, err := d.Client.CreateInstance(api.InstancesPost{Name: name, Type: api.InstanceTypeContainer,
				Source: api.InstanceSource{Type: "image", Alias: img.Alias}})
			is.NoErr(err)
			is.NoErr(op.Wait())
			defer func() {
				op, err := d.Client.DeleteInstance(name)
				is.NoErr(err)
				is.NoErr(op.Wait())
			}()
			inst, _, err := d.Client.GetInstance(name)
			is.NoErr(err)
			is.Equal(inst.Profiles, []string{profile})
			is.Equal(inst.ExpandedDevices["net1"]["network"], d.Network)
		})
	}

	t.Run("missing profile", func(t *testing.T) {
		is := is.New(t)
		before := images(t, d)
		src := tiny(t)
		src.ID = incustest.UniqueName("prof-")
		src.Metadata.Profiles = []string{"no-such-profile"}
		_, err := im.Import(ctx, src, imagebuild.Options{})
		is.True(errors.Is(err, imagebuild.ErrBadSource))
		is.True(bytes.Contains([]byte(err.Error()), []byte(`"no-such-profile"`)))
		is.Equal(images(t, d), before)
		is.Equal(aliasTarget(t, d, "artifact/"+src.ID), "")
	})
}
