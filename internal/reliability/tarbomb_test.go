package reliability_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/incusexec/incusexec/imagebuild"
	"github.com/incusexec/incusexec/internal/reliability"
	"github.com/matryer/is"
)

// rootfsWith is a minimal root filesystem plus the entries add writes.
func rootfsWith(add func(tw *tar.Writer, raw *bytes.Buffer)) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, d := range []string{"./", "./sbin/", "./dev/", "./etc/"} {
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: time.Unix(1e9, 0)})
	}
	_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "./sbin/init", Mode: 0o755, Size: 2, ModTime: time.Unix(1e9, 0)})
	_, _ = tw.Write([]byte("#!"))
	add(tw, &b)
	_ = tw.Close()
	return b.Bytes()
}

// TestHostileTarballs extends imagebuild's committed bad corpus with the
// cases the issue lists that it lacks: device nodes outside /dev, a huge
// PAX header, and a compression bomb. Validation must refuse or survive each
// with bounded memory; the figures go to RELIABILITY.md.
func TestHostileTarballs(t *testing.T) {
	t.Parallel()
	cases := map[string][]byte{
		"char device outside /dev": rootfsWith(func(tw *tar.Writer, raw *bytes.Buffer) {
			_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeChar, Name: "./etc/mem", Mode: 0o666, Devmajor: 1, Devminor: 1})
		}),
		"block device outside /dev": rootfsWith(func(tw *tar.Writer, raw *bytes.Buffer) {
			_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeBlock, Name: "./etc/sda", Mode: 0o666, Devmajor: 8, Devminor: 0})
		}),
		"huge PAX header": rootfsWith(func(tw *tar.Writer, raw *bytes.Buffer) {
			rawEntry(tw, raw, tar.TypeXHeader, paxRecord("comment", strings.Repeat("x", 16<<20)))
			_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "./etc/x", Mode: 0o644})
		}),
		"huge GNU long name": rootfsWith(func(tw *tar.Writer, raw *bytes.Buffer) {
			rawEntry(tw, raw, tar.TypeGNULongName, []byte("./etc/"+strings.Repeat("a", 16<<20)+"\x00"))
			_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "./etc/x", Mode: 0o644})
		}),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			err := imagebuild.Validate(bytes.NewReader(data))
			t.Logf("%s: %v", name, err)
			if !errors.Is(err, imagebuild.ErrUnsafeEntry) && !errors.Is(err, imagebuild.ErrBadArchive) {
				t.Errorf("%s accepted: %v", name, err)
			}
		})
	}
	t.Run("gzip bomb", func(t *testing.T) {
		is := is.New(t)
		// Zeros in one file: 128 MiB here, 1 GiB in the soak variant,
		// compressed at gzip's fastest level (hundreds to one already;
		// the best level costs many CPU seconds under -race and proves
		// nothing more).
		size := int64(128 << 20)
		if reliability.Soak() {
			size = 1 << 30
		}
		path := filepath.Join(t.TempDir(), "bomb.tar.gz")
		f, err := os.Create(path)
		is.NoErr(err)
		zw, _ := gzip.NewWriterLevel(f, gzip.BestSpeed)
		data := rootfsWith(func(tw *tar.Writer, raw *bytes.Buffer) {
			_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "./bomb", Mode: 0o644, Size: size})
		})
		data = data[:len(data)-1024] // without the end marker: the content follows
		_, err = zw.Write(data)
		is.NoErr(err)
		_, err = io.CopyN(zw, zeros{}, size)
		is.NoErr(err)
		_, err = zw.Write(make([]byte, 1024))
		is.NoErr(err)
		is.NoErr(zw.Close())
		is.NoErr(f.Close())
		st, _ := os.Stat(path)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		in, err := os.Open(path)
		is.NoErr(err)
		defer in.Close()
		gz, err := gzip.NewReader(in)
		is.NoErr(err)
		err = imagebuild.Validate(gz)
		runtime.ReadMemStats(&after)
		t.Logf("gzip bomb %d bytes → %d MiB: %v; heap +%d MiB", st.Size(), size>>20, err, (int64(after.HeapInuse)-int64(before.HeapInuse))>>20)
		is.True(int64(after.HeapInuse)-int64(before.HeapInuse) < 64<<20) // streamed, not expanded in memory
	})
}

// rawEntry writes an entry of a type tar.Writer will not write itself (PAX
// and GNU long-name headers), by writing a regular one and retyping it.
func rawEntry(tw *tar.Writer, out *bytes.Buffer, typ byte, body []byte) {
	var hdr bytes.Buffer
	w := tar.NewWriter(&hdr)
	_ = w.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "././@LongLink", Mode: 0o644, Size: int64(len(body)), Format: tar.FormatGNU})
	_ = w.Flush()
	block := hdr.Bytes()[:512]
	block[156] = typ
	// Recompute the checksum over the retyped block.
	for i := 148; i < 156; i++ {
		block[i] = ' '
	}
	sum := 0
	for _, c := range block {
		sum += int(c)
	}
	copy(block[148:], []byte(fmt.Sprintf("%06o\x00 ", sum)))
	// Between tw's entries, the raw bytes go straight to its output.
	raw := append(append([]byte{}, block...), body...)
	if pad := len(body) % 512; pad != 0 {
		raw = append(raw, make([]byte, 512-pad)...)
	}
	_ = tw.Flush()
	out.Write(raw)
}

// paxRecord is one PAX record, its length prefix counting itself.
func paxRecord(k, v string) []byte {
	n := len(k) + len(v) + 3
	for l := len(fmt.Sprint(n)); ; l++ {
		if len(fmt.Sprint(n+l)) == l {
			return []byte(fmt.Sprintf("%d %s=%s\n", n+l, k, v))
		}
	}
}
