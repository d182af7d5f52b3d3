package imagebuild_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/incusexec/incusexec/imagebuild"
	"github.com/incusexec/incusexec/imagebuild/imagetest"
	"github.com/incusexec/incusexec/internal/incustest"
	incus "github.com/lxc/incus/v6/client"
	"github.com/lxc/incus/v6/shared/api"
	"github.com/matryer/is"
)

// tinyRootfs is a root filesystem that passes validation (it cannot boot):
// enough for tests about importing rather than booting.
func tinyRootfs(t testing.TB, marker string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "./sbin/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "./sbin/init", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(marker))},
		{Name: "./sbin/init.hard", Typeflag: tar.TypeLink, Linkname: "./sbin/init"},
		{Name: "./etc/", Typeflag: tar.TypeDir, Mode: 0o755},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte(marker))
		}
	}
	tw.Close()
	return buf.Bytes()
}

func compress(t testing.TB, tool string, b []byte) []byte {
	t.Helper()
	cmd := exec.Command(tool, "-c")
	cmd.Stdin = bytes.NewReader(b)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v", tool, err)
	}
	return out
}

func newImporter(t testing.TB, d *incustest.Daemon) *imagebuild.Importer {
	return &imagebuild.Importer{Client: d.Client, LockDir: filepath.Join(os.TempDir(), "imagebuild-test-locks")}
}

// images returns the fingerprints on the daemon, sorted.
func images(t testing.TB, d *incustest.Daemon) []string {
	t.Helper()
	fps, err := d.Client.GetImageFingerprints()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(fps)
	return fps
}

func aliasTarget(t testing.TB, d *incustest.Daemon, alias string) string {
	t.Helper()
	e, _, err := d.Client.GetImageAlias(alias)
	if api.StatusErrorCheck(err, http.StatusNotFound) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return e.Target
}

func TestUnifiedImageBoots(t *testing.T) {
	d := incustest.Shared(t)
	path := incustest.DebianTarball(t, imagetest.HostSuite())
	im := newImporter(t, d)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	id := incustest.UniqueName("unified-")
	img, err := im.Import(ctx, imagebuild.Source{ID: id, Path: path}, imagebuild.Options{Mode: imagebuild.Unified, Compression: imagebuild.Zstd})
	is.New(t).NoErr(err)
	t.Cleanup(func() { // after bootCheck's instance is gone
		if err := im.Delete(context.Background(), img.Alias); err != nil {
			t.Error(err)
		}
	})
	bootCheck(t, d, img.Alias)
}

// TestImportModesAndCompressions imports a small root filesystem from every
// input compression, in both modes and every output compression, and
// checks the image the server holds.
func TestImportModesAndCompressions(t *testing.T) {
	d := incustest.Shared(t)
	raw := tinyRootfs(t, "init")
	inputs := map[string][]byte{"tar": raw, "gz": compress(t, "gzip", raw), "xz": compress(t, "xz", raw), "zst": compress(t, "zstd", raw)}
	im := newImporter(t, d)
	for in, data := range inputs {
		for _, opts := range []imagebuild.Options{
			{Mode: imagebuild.Split},
			{Mode: imagebuild.Unified, Compression: imagebuild.None},
			{Mode: imagebuild.Unified, Compression: imagebuild.Gzip},
			{Mode: imagebuild.Unified, Compression: imagebuild.Zstd},
		} {
			t.Run(in+"-"+string(opts.Mode)+"-"+string(opts.Compression), func(t *testing.T) {
				is := is.New(t)
				ctx := context.Background()
				desc := "line one\nrelease: injected\n{{ x }}: \"quoted\"\x7f"
				src := imagebuild.Source{ID: incustest.UniqueName("modes-"), Reader: bytes.NewReader(data),
					Metadata: imagebuild.Metadata{Architecture: "amd64", Description: desc, Release: "bookworm", Properties: map[string]string{"variant": "minbase"}}}
				img, err := im.Import(ctx, src, opts)
				is.NoErr(err)
				is.Equal(img.Alias, "artifact/"+src.ID)
				is.True(!img.Reused)
				got, _, err := d.Client.GetImage(img.Fingerprint)
				is.NoErr(err)
				is.Equal(got.Architecture, "x86_64")
				is.Equal(got.Properties["description"], desc)   // survives YAML unchanged
				is.Equal(got.Properties["release"], "bookworm") // not overridden by the description
				is.Equal(got.Properties["artifact_id"], src.ID)
				is.Equal(got.Properties["variant"], "minbase")
				sum := sha256.Sum256(data)
				is.Equal(got.Properties[imagebuild.PropertySHA256], hex.EncodeToString(sum[:]))
				is.Equal(aliasTarget(t, d, img.Alias), img.Fingerprint)
				is.NoErr(im.Delete(ctx, img.Alias))
				is.Equal(aliasTarget(t, d, img.Alias), "")
			})
		}
	}
}

// TestBadInputLeavesNothing imports every committed bad archive in both
// modes: each fails with the sentinel its name announces, and no image or
// alias remains.
func TestBadInputLeavesNothing(t *testing.T) {
	d := incustest.Shared(t)
	files, _ := filepath.Glob("testdata/bad/*")
	if len(files) == 0 {
		t.Fatal("no testdata/bad")
	}
	im := newImporter(t, d)
	for _, mode := range []imagebuild.Mode{imagebuild.Split, imagebuild.Unified} {
		for _, f := range files {
			t.Run(string(mode)+"/"+filepath.Base(f), func(t *testing.T) {
				is := is.New(t)
				before := images(t, d)
				want := imagebuild.ErrBadArchive
				switch base := filepath.Base(f); {
				case strings.HasPrefix(base, "unsafe"):
					want = imagebuild.ErrUnsafeEntry
				case strings.HasPrefix(base, "noinit"):
					want = imagebuild.ErrNoInit
				}
				id := incustest.UniqueName("bad-")
				_, err := im.Import(context.Background(), imagebuild.Source{ID: id, Path: f}, imagebuild.Options{Mode: mode})
				if !errors.Is(err, want) {
					t.Fatalf("import %s: %v, want %v", f, err, want)
				}
				is.Equal(images(t, d), before)                  // no image left
				is.Equal(aliasTarget(t, d, "artifact/"+id), "") // no alias left
			})
		}
	}
}

// stallingReader yields data, then blocks until ctx ends.
type stallingReader struct {
	ctx  context.Context
	data io.Reader
}

func (s *stallingReader) Read(p []byte) (int, error) {
	n, err := s.data.Read(p)
	if err == io.EOF {
		<-s.ctx.Done()
		return 0, io.ErrUnexpectedEOF
	}
	return n, err
}

// TestCancelLeavesNothing cancels imports in the middle of the stream, in
// both modes, and checks that nothing is left.
func TestCancelLeavesNothing(t *testing.T) {
	d := incustest.Shared(t)
	im := newImporter(t, d)
	// A prefix of a real archive: several entries, then the stream stalls.
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i := range 100 {
		body := bytes.Repeat([]byte{byte(i)}, 4096)
		tw.WriteHeader(&tar.Header{Name: "./file" + strings.Repeat("x", i), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))})
		tw.Write(body)
	}
	prefix := buf.Bytes()[:200<<10]
	for _, opts := range []imagebuild.Options{{Mode: imagebuild.Split}, {Mode: imagebuild.Unified, Compression: imagebuild.Zstd}} {
		t.Run(string(opts.Mode), func(t *testing.T) {
			is := is.New(t)
			before := images(t, d)
			ctx, cancel := context.WithCancel(context.Background())
			var once sync.Once
			opts.Progress = func(read, total int64) {
				if read >= int64(len(prefix)) {
					once.Do(func() { time.AfterFunc(100*time.Millisecond, cancel) })
				}
			}
			id := incustest.UniqueName("cancel-")
			_, err := im.Import(ctx, imagebuild.Source{ID: id, Reader: &stallingReader{ctx: ctx, data: bytes.NewReader(prefix)}}, opts)
			t.Log(err)
			is.True(errors.Is(err, context.Canceled))
			is.Equal(images(t, d), before)
			is.Equal(aliasTarget(t, d, "artifact/"+id), "")
		})
	}
}

// TestReimportAndReplace checks idempotence (same alias reused), conflict
// detection by digest, and Replace's alias swap that deletes the old image
// only when no instance uses it.
func TestReimportAndReplace(t *testing.T) {
	is := is.New(t)
	d := incustest.Shared(t)
	im := newImporter(t, d)
	ctx := context.Background()
	id := incustest.UniqueName("replace-")
	v1, v2, v3 := tinyRootfs(t, "one"), tinyRootfs(t, "two"), tinyRootfs(t, "three")
	src := func(b []byte) imagebuild.Source {
		sum := sha256.Sum256(b)
		return imagebuild.Source{ID: id, Reader: bytes.NewReader(b), SHA256: hex.EncodeToString(sum[:])}
	}
	first, err := im.Import(ctx, src(v1), imagebuild.Options{})
	is.NoErr(err)
	again, err := im.Import(ctx, src(v1), imagebuild.Options{})
	is.NoErr(err)
	is.True(again.Reused)
	is.Equal(again.Fingerprint, first.Fingerprint)

	_, err = im.Import(ctx, src(v2), imagebuild.Options{})
	is.True(errors.Is(err, imagebuild.ErrConflict)) // other content, no Replace

	second, err := im.Import(ctx, src(v2), imagebuild.Options{Replace: true})
	is.NoErr(err)
	is.True(second.Fingerprint != first.Fingerprint)
	is.Equal(aliasTarget(t, d, second.Alias), second.Fingerprint)
	is.True(!slices.Contains(images(t, d), first.Fingerprint)) // unused old image deleted

	// An instance of the second image keeps it alive through a replace.
	name := incustest.UniqueName("user-")
	op, err := d.Client.CreateInstance(api.InstancesPost{Name: name, Source: api.InstanceSource{Type: "image", Alias: second.Alias}})
	is.NoErr(err)
	is.NoErr(op.Wait())
	t.Cleanup(func() {
		if op, err := d.Client.DeleteInstance(name); err == nil {
			_ = op.Wait()
		}
		if op, err := d.Client.DeleteImage(second.Fingerprint); err == nil {
			_ = op.Wait()
		}
	})
	third, err := im.Import(ctx, src(v3), imagebuild.Options{Replace: true})
	is.NoErr(err)
	is.Equal(aliasTarget(t, d, third.Alias), third.Fingerprint)
	is.True(slices.Contains(images(t, d), second.Fingerprint)) // in use: kept

	err = im.Delete(ctx, third.Alias)
	is.NoErr(err)
	is.True(!slices.Contains(images(t, d), third.Fingerprint))
	is.True(errors.Is(im.Delete(ctx, third.Alias), imagebuild.ErrNotFound))
}

// TestConcurrentImportsImportOnce starts imports of one artifact from
// several goroutines of one Importer and from separate Importers (standing
// for separate processes: they share only the lock directory and the
// server): all get the same image and only one is created.
func TestConcurrentImportsImportOnce(t *testing.T) {
	is := is.New(t)
	d := incustest.Shared(t)
	path := filepath.Join(t.TempDir(), "rootfs.tar")
	is.NoErr(os.WriteFile(path, tinyRootfs(t, "concurrent"), 0o644))
	before := len(images(t, d))
	shared := newImporter(t, d)
	id := incustest.UniqueName("conc-")
	var wg sync.WaitGroup
	results := make([]imagebuild.Image, 6)
	errs := make([]error, 6)
	for i := range results {
		im := shared
		if i >= 3 {
			// Another process: its own client and Importer.
			c, err := incus.ConnectIncusUnix(d.Socket, nil)
			is.NoErr(err)
			defer c.Disconnect()
			im = &imagebuild.Importer{Client: c, LockDir: shared.LockDir}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = im.Import(context.Background(), imagebuild.Source{ID: id, Path: path}, imagebuild.Options{})
		}()
	}
	wg.Wait()
	fresh := 0
	for i := range results {
		is.NoErr(errs[i])
		is.Equal(results[i].Fingerprint, results[0].Fingerprint)
		if !results[i].Reused {
			fresh++
		}
	}
	is.Equal(fresh, 1)                    // one import, five reuses
	is.Equal(len(images(t, d)), before+1) // one image
	is.NoErr(shared.Delete(context.Background(), results[0].Alias))
}

// TestJoinedImportStopsAtItsOwnCtx joins an import that stalls: the joining
// caller returns when its own ctx ends while the first import goes on; the
// first returns when its ctx ends, leaving nothing. An import whose ctx has
// already ended imports nothing.
func TestJoinedImportStopsAtItsOwnCtx(t *testing.T) {
	is := is.New(t)
	d := incustest.Shared(t)
	im := newImporter(t, d)
	before := images(t, d)
	id := incustest.UniqueName("join-")
	rootfs := tinyRootfs(t, "join")
	path := filepath.Join(t.TempDir(), "rootfs.tar")
	is.NoErr(os.WriteFile(path, rootfs, 0o644))

	firstCtx, cancelFirst := context.WithCancel(context.Background())
	defer cancelFirst()
	reading := make(chan struct{})
	var once sync.Once
	firstErr := make(chan error, 1)
	go func() {
		_, err := im.Import(firstCtx, imagebuild.Source{ID: id, Reader: &stallingReader{ctx: firstCtx, data: bytes.NewReader(rootfs[:1024])}},
			imagebuild.Options{Progress: func(read, total int64) { once.Do(func() { close(reading) }) }})
		firstErr <- err
	}()
	<-reading

	joinCtx, cancelJoin := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancelJoin)
	_, err := im.Import(joinCtx, imagebuild.Source{ID: id, Path: path}, imagebuild.Options{})
	is.True(errors.Is(err, context.Canceled)) // the joining caller gave up
	select {
	case err := <-firstErr:
		t.Fatalf("first import ended with the joining caller's ctx: %v", err)
	case <-time.After(100 * time.Millisecond):
	}

	cancelFirst()
	is.True(errors.Is(<-firstErr, context.Canceled))
	is.Equal(images(t, d), before)
	is.Equal(aliasTarget(t, d, "artifact/"+id), "")

	ended, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = im.Import(ended, imagebuild.Source{ID: id, Path: path}, imagebuild.Options{})
	is.True(errors.Is(err, context.Canceled))
	is.Equal(images(t, d), before)
	is.Equal(aliasTarget(t, d, "artifact/"+id), "")
}

func TestProgressReportsBytesOfTotal(t *testing.T) {
	is := is.New(t)
	d := incustest.Shared(t)
	path := filepath.Join(t.TempDir(), "rootfs.tar.gz")
	data := compress(t, "gzip", tinyRootfs(t, strings.Repeat("p", 300000)))
	is.NoErr(os.WriteFile(path, data, 0o644))
	var calls [][2]int64
	img, err := newImporter(t, d).Import(context.Background(), imagebuild.Source{ID: incustest.UniqueName("prog-"), Path: path},
		imagebuild.Options{Progress: func(read, total int64) { calls = append(calls, [2]int64{read, total}) }})
	is.NoErr(err)
	is.True(len(calls) > 0)
	last := calls[len(calls)-1]
	is.Equal(last, [2]int64{int64(len(data)), int64(len(data))}) // ends at total
	for i := 1; i < len(calls); i++ {
		is.True(calls[i][0] >= calls[i-1][0]) // monotonic
	}
	is.NoErr(newImporter(t, d).Delete(context.Background(), img.Alias))
}

func TestVirtualMachineImage(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	d := incustest.Shared(t)
	im := newImporter(t, d)
	dir := t.TempDir()
	qcow := filepath.Join(dir, "disk.qcow2")
	rawDisk := filepath.Join(dir, "disk.raw")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", qcow, "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}
	if err := os.WriteFile(rawDisk, bytes.Repeat([]byte{0}, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, path := range map[string]string{"qcow2": qcow, "raw": rawDisk} {
		t.Run(name, func(t *testing.T) {
			is := is.New(t)
			img, err := im.Import(context.Background(), imagebuild.Source{ID: incustest.UniqueName("vm-"), Path: path}, imagebuild.Options{Type: imagebuild.VirtualMachine})
			is.NoErr(err)
			got, _, err := d.Client.GetImage(img.Fingerprint)
			is.NoErr(err)
			is.Equal(got.Type, "virtual-machine")
			is.NoErr(im.Delete(context.Background(), img.Alias))
		})
	}
	t.Run("tarball-refused", func(t *testing.T) {
		before := images(t, d)
		_, err := im.Import(context.Background(), imagebuild.Source{ID: incustest.UniqueName("vm-"), Reader: bytes.NewReader(tinyRootfs(t, "x"))}, imagebuild.Options{Type: imagebuild.VirtualMachine})
		is.New(t).True(errors.Is(err, imagebuild.ErrBadArchive))
		is.New(t).Equal(images(t, d), before)
	})
}

// TestSkipValidationTrustsTheStream: with SkipValidation a split import
// uploads what it is given, so an archive without init becomes an image
// (the host vouched for it); without, it is refused.
func TestSkipValidationTrustsTheStream(t *testing.T) {
	is := is.New(t)
	d := incustest.Shared(t)
	im := newImporter(t, d)
	noinit, err := os.ReadFile("testdata/bad/noinit.tar")
	is.NoErr(err)
	_, err = im.Import(context.Background(), imagebuild.Source{ID: incustest.UniqueName("skip-"), Reader: bytes.NewReader(noinit)}, imagebuild.Options{})
	is.True(errors.Is(err, imagebuild.ErrNoInit))
	img, err := im.Import(context.Background(), imagebuild.Source{ID: incustest.UniqueName("skip-"), Reader: bytes.NewReader(noinit)}, imagebuild.Options{SkipValidation: true})
	is.NoErr(err)
	is.Equal(aliasTarget(t, d, img.Alias), img.Fingerprint)
	is.NoErr(im.Delete(context.Background(), img.Alias))
}

// TestCancelUnblocksStalledPipe imports from a pipe whose writer stalls after
// part of an archive, as a hung download would, and cancels: Import must
// return (closing the pipe to unblock its read) and leave nothing.
func TestCancelUnblocksStalledPipe(t *testing.T) {
	is := is.New(t)
	d := incustest.Shared(t)
	im := newImporter(t, d)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i := range 50 {
		body := bytes.Repeat([]byte{byte(i)}, 4096)
		tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("./file%d", i), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))})
		tw.Write(body)
	}
	pr, pw, err := os.Pipe()
	is.NoErr(err)
	defer pw.Close() // the writer stays open: the stream stalls, never ends
	go func() { _, _ = pw.Write(buf.Bytes()[:100<<10]) }()

	before := images(t, d)
	ctx, cancel := context.WithCancel(context.Background())
	var once sync.Once
	opts := imagebuild.Options{Progress: func(read, total int64) {
		if read >= 100<<10 {
			once.Do(func() { time.AfterFunc(100*time.Millisecond, cancel) })
		}
	}}
	id := incustest.UniqueName("stall-")
	done := make(chan error, 1)
	go func() {
		_, err := im.Import(ctx, imagebuild.Source{ID: id, Reader: pr}, opts)
		done <- err
	}()
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Import still blocked on the stalled pipe 30 s after it was cancelled")
	}
	is.True(errors.Is(err, context.Canceled))
	is.Equal(images(t, d), before)
	is.Equal(aliasTarget(t, d, "artifact/"+id), "")
}
