package incustest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/incusexec/incusexec/imagebuild"
	"github.com/incusexec/incusexec/imagebuild/imagetest"
	"github.com/incusexec/incusexec/internal/testimage"
)

// DebianBuildArtifactID is the artifact ID of DebianBuildImage.
const DebianBuildArtifactID = "incustest-debian-build"

var debianBuildOnce sync.Map // *Daemon -> *debianResult

// DebianBuildImage imports the build variant of the Debian tarball
// (testimage.DebianBuildTarball: build-essential and a normal user) into
// the daemon once, as DebianImage does, and returns its alias. Use it
// with DebianProfile.
func (d *Daemon) DebianBuildImage(t testing.TB) string {
	t.Helper()
	v, _ := debianBuildOnce.LoadOrStore(d, &debianResult{})
	r := v.(*debianResult)
	path, err := testimage.DebianBuildTarball(imagetest.HostSuite())
	if err != nil {
		if errors.Is(err, imagetest.ErrMissingTool) {
			err = errors.Join(ErrUnavailable, err)
		}
		SkipOrFail(t, err)
	}
	r.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		im := &imagebuild.Importer{Client: d.Client, Logger: d.log}
		img, err := im.Import(ctx, imagebuild.Source{
			ID:   DebianBuildArtifactID,
			Path: path,
			Metadata: imagebuild.Metadata{
				Description: "Debian " + imagetest.HostSuite() + " minbase with systemd and build-essential (incustest)",
				OS:          "debian", Release: imagetest.HostSuite(),
			},
		}, imagebuild.Options{Owner: "incustest"})
		r.alias, r.err = img.Alias, err
	})
	if r.err != nil {
		t.Fatalf("import Debian build image: %v", r.err)
	}
	return r.alias
}
