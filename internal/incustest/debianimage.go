package incustest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/lxc/incus/v6/shared/api"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/imagebuild"
	"github.com/incusexec/incusexec/imagebuild/imagetest"
)

// DebianArtifactID is the artifact ID under which DebianImage imports the
// cached Debian tarball; its alias is imagebuild.AliasPrefix + DebianArtifactID.
const DebianArtifactID = "incustest-debian"

// DebianProfileName is the profile DebianProfile creates: root disk on the
// daemon's pool and NIC host0 on its bridge, as a Debusine worker's profile.
const DebianProfileName = "debusine-test"

var debianOnce sync.Map // *Daemon -> *debianResult

type debianResult struct {
	once    sync.Once
	alias   string
	err     error
	profile sync.Once
	perr    error
}

func debianResultOf(d *Daemon) *debianResult {
	v, _ := debianOnce.LoadOrStore(d, &debianResult{})
	return v.(*debianResult)
}

// DebianImage imports the cached Debian system tarball of the host's suite
// (see DebianTarball) into the daemon once, through imagebuild in split
// mode, and returns its alias. Instances of it need a NIC named host0: use
// DebianProfile.
func (d *Daemon) DebianImage(t testing.TB) string {
	t.Helper()
	r := debianResultOf(d)
	path := DebianTarball(t, imagetest.HostSuite())
	r.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		im := &imagebuild.Importer{Client: d.Client, Logger: d.log}
		img, err := im.Import(ctx, imagebuild.Source{
			ID:   DebianArtifactID,
			Path: path,
			Metadata: imagebuild.Metadata{
				Description: "Debian " + imagetest.HostSuite() + " minbase with systemd (incustest)",
				OS:          "debian", Release: imagetest.HostSuite(),
			},
		}, imagebuild.Options{Owner: "incustest"})
		r.alias, r.err = img.Alias, err
	})
	if r.err != nil {
		t.Fatalf("import Debian image: %v", r.err)
	}
	return r.alias
}

// DebianProfile creates (once per daemon) and returns the profile
// DebianProfileName, which gives instances a root disk on d.Pool and a NIC
// named host0 on d.Network, which Debian's systemd-networkd configures by
// DHCP in containers. Use it alone, without the default profile.
func (d *Daemon) DebianProfile(t testing.TB) string {
	t.Helper()
	r := debianResultOf(d)
	r.profile.Do(func() {
		devices := map[string]map[string]string{
			"root": {"type": "disk", "path": "/", "pool": d.Pool},
		}
		if d.Network != "" {
			devices["eth0"] = map[string]string{"type": "nic", "network": d.Network, "name": "host0"}
		}
		r.perr = d.Client.CreateProfile(api.ProfilesPost{
			Name: DebianProfileName,
			ProfilePut: api.ProfilePut{
				Description: "incustest: Debusine-style profile (NIC host0)",
				Config:      map[string]string{executor.OwnerKey: "incustest"},
				Devices:     devices,
			},
		})
	})
	if r.perr != nil {
		t.Fatalf("create profile %s: %v", DebianProfileName, r.perr)
	}
	return DebianProfileName
}
