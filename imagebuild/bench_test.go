package imagebuild_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/incusexec/incusexec/imagebuild"
	"github.com/incusexec/incusexec/imagebuild/imagetest"
	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/lxc/incus/v6/shared/api"
)

// TestBenchmarkTable measures, side by side in one process, imports and
// launches on the cached Debian tarball and prints tables (it asserts
// nothing about time). It runs only with IMAGEBUILD_BENCH=1; rounds from
// IMAGEBUILD_BENCH_ROUNDS (3).
//
//	IMAGEBUILD_BENCH=1 go test -run TestBenchmarkTable -v -timeout 60m ./imagebuild/
func TestBenchmarkTable(t *testing.T) {
	if os.Getenv("IMAGEBUILD_BENCH") == "" {
		t.Skip("set IMAGEBUILD_BENCH=1 to run the benchmark tables")
	}
	rounds := 3
	if n, err := strconv.Atoi(os.Getenv("IMAGEBUILD_BENCH_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	tarPath := incustest.DebianTarball(t, imagetest.HostSuite())
	xzPath := incustest.CompressedTarball(t, tarPath, "xz")
	which := os.Getenv("IMAGEBUILD_BENCH") // "imports", "launch" or anything for both
	if which != "launch" {
		t.Run("imports", func(t *testing.T) { benchImports(t, tarPath, xzPath, rounds) })
	}
	if which != "imports" {
		t.Run("launch", func(t *testing.T) { benchLaunch(t, tarPath, rounds) })
	}
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func fmtDurations(d []time.Duration) string {
	var parts []string
	for _, x := range d {
		parts = append(parts, fmt.Sprintf("%.2f", x.Seconds()))
	}
	return strings.Join(parts, " ")
}

func deleteAll(t *testing.T, d *incustest.Daemon) {
	for _, fp := range images(t, d) {
		op, err := d.Client.DeleteImage(fp)
		if err == nil {
			err = op.Wait()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// benchImports: split import vs `incus image import meta.tar rootfs.tar.xz`
// of the same files, and unified+zstd import vs `xz -d` of the input.
func benchImports(t *testing.T, tarPath, xzPath string, rounds int) {
	d := incustest.Shared(t)
	meta, err := imagebuild.MetadataTarball(imagebuild.Metadata{Architecture: "amd64", Description: "bench"})
	if err != nil {
		t.Fatal(err)
	}
	metaPath := filepath.Join(t.TempDir(), "meta.tar")
	if err := os.WriteFile(metaPath, meta, 0o644); err != nil {
		t.Fatal(err)
	}
	im := newImporter(t, d)
	ctx := context.Background()
	type row struct {
		name string
		runs []time.Duration
	}
	rows := []*row{{name: "imagebuild split (tar.xz)"}, {name: "incus image import meta.tar rootfs.tar.xz"}, {name: "imagebuild split SkipValidation (tar.xz)"},
		{name: "imagebuild unified zstd (tar.xz)"}, {name: "xz -d rootfs.tar.xz > /dev/null"},
		{name: "imagebuild split (tar)"}, {name: "imagebuild unified none (tar)"}}
	timeIt := func(r *row, f func() error) {
		start := time.Now()
		if err := f(); err != nil {
			t.Fatalf("%s: %v", r.name, err)
		}
		r.runs = append(r.runs, time.Since(start))
		deleteAll(t, d)
	}
	importer := func(path string, opts imagebuild.Options) func() error {
		return func() error {
			_, err := im.Import(ctx, imagebuild.Source{ID: incustest.UniqueName("bench-"), Path: path, Metadata: imagebuild.Metadata{Architecture: "amd64"}}, opts)
			return err
		}
	}
	for range rounds {
		timeIt(rows[0], importer(xzPath, imagebuild.Options{}))
		timeIt(rows[1], func() error {
			cmd := exec.Command("incus", "image", "import", metaPath, xzPath)
			cmd.Env = append(os.Environ(), "INCUS_DIR="+d.Dir)
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		})
		timeIt(rows[2], importer(xzPath, imagebuild.Options{SkipValidation: true}))
		timeIt(rows[3], importer(xzPath, imagebuild.Options{Mode: imagebuild.Unified, Compression: imagebuild.Zstd}))
		timeIt(rows[4], func() error {
			return exec.Command("sh", "-c", "xz -d -c "+xzPath+" > /dev/null").Run()
		})
		timeIt(rows[5], importer(tarPath, imagebuild.Options{}))
		timeIt(rows[6], importer(tarPath, imagebuild.Options{Mode: imagebuild.Unified, Compression: imagebuild.None}))
	}
	st, _ := os.Stat(xzPath)
	st2, _ := os.Stat(tarPath)
	var b strings.Builder
	fmt.Fprintf(&b, "\nimports of %s (%d MB tar, %d MB xz), %d rounds, seconds\n", filepath.Base(tarPath), st2.Size()>>20, st.Size()>>20, rounds)
	fmt.Fprintf(&b, "| %-44s | %-7s | %s |\n|%s|%s|%s|\n", "what", "median", "runs", strings.Repeat("-", 46), strings.Repeat("-", 9), strings.Repeat("-", 20))
	for _, r := range rows {
		fmt.Fprintf(&b, "| %-44s | %7.2f | %s |\n", r.name, median(r.runs).Seconds(), fmtDurations(r.runs))
	}
	fmt.Fprintf(&b, "split / incus image import: %.2f (goal ≤ 1.5)\n", median(rows[0].runs).Seconds()/median(rows[1].runs).Seconds())
	fmt.Fprintf(&b, "split SkipValidation / incus image import: %.2f\n", median(rows[2].runs).Seconds()/median(rows[1].runs).Seconds())
	fmt.Fprintf(&b, "unified zstd / xz -d: %.2f (goal ≤ 1.3)\n", median(rows[3].runs).Seconds()/median(rows[4].runs).Seconds())
	t.Log(b.String())
}

// benchLaunch: which unified compression launches fastest, on dir and
// btrfs pools, alternating the compressions round by round. On dir every
// launch unpacks the image; on btrfs only the first does, so the first
// launch and a second one are both shown.
func benchLaunch(t *testing.T, tarPath string, rounds int) {
	comps := []imagebuild.Compression{imagebuild.None, imagebuild.Gzip, imagebuild.Zstd}
	var b strings.Builder
	fmt.Fprintf(&b, "\nlaunch (create+start) of unified images by compression, %d rounds, seconds\n", rounds)
	fmt.Fprintf(&b, "| %-6s | %-5s | %-15s | %-8s | %-22s | %-8s |\n|--------|-------|-----------------|----------|------------------------|----------|\n",
		"pool", "comp", "import (median)", "1st (md)", "1st runs", "2nd (md)")
	for _, pool := range []string{"dir", "btrfs"} {
		d := incustest.Private(t, incustest.Options{Pool: pool, PoolSize: "6GiB"})
		im := &imagebuild.Importer{Client: d.Client, LockDir: t.TempDir()}
		ctx := context.Background()
		imports := map[imagebuild.Compression][]time.Duration{}
		first := map[imagebuild.Compression][]time.Duration{}
		second := map[imagebuild.Compression][]time.Duration{}
		launch := func(alias string) time.Duration {
			name := incustest.UniqueName("l-")
			start := time.Now()
			op, err := d.Client.CreateInstance(api.InstancesPost{Name: name, Source: api.InstanceSource{Type: "image", Alias: alias}, Start: true})
			if err == nil {
				err = op.Wait()
			}
			took := time.Since(start)
			if err != nil {
				t.Fatalf("launch %s on %s: %v", alias, pool, err)
			}
			op, err = d.Client.UpdateInstanceState(name, api.InstanceStatePut{Action: "stop", Force: true, Timeout: -1}, "")
			if err == nil {
				_ = op.Wait()
			}
			if op, err := d.Client.DeleteInstance(name); err == nil {
				_ = op.Wait()
			}
			return took
		}
		for round := range rounds {
			order := slices.Clone(comps)
			// Rotate so that no compression always runs first.
			order = append(order[round%len(order):], order[:round%len(order)]...)
			for _, c := range order {
				start := time.Now()
				img, err := im.Import(ctx, imagebuild.Source{ID: incustest.UniqueName("l-"), Path: tarPath}, imagebuild.Options{Mode: imagebuild.Unified, Compression: c})
				if err != nil {
					t.Fatal(err)
				}
				imports[c] = append(imports[c], time.Since(start))
				first[c] = append(first[c], launch(img.Alias))
				second[c] = append(second[c], launch(img.Alias))
				if err := im.Delete(ctx, img.Alias); err != nil {
					t.Fatal(err)
				}
			}
		}
		for _, c := range comps {
			fmt.Fprintf(&b, "| %-6s | %-5s | %15.2f | %8.2f | %-22s | %8.2f |\n", pool, c, median(imports[c]).Seconds(),
				median(first[c]).Seconds(), fmtDurations(first[c]), median(second[c]).Seconds())
		}
	}
	t.Log(b.String())
}
