package imagebuild

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/lxc/incus/v6/shared/api"
	"gopkg.in/yaml.v2"
)

// FuzzValidate feeds arbitrary bytes to the streaming validation (through
// the same sniffing and gzip path Import uses): it must never panic or
// hang, must classify every failure under a sentinel, and what it accepts
// must have only safe names.
func FuzzValidate(f *testing.F) {
	f.Add(minimal(f))
	f.Add(usrmerged(f))
	f.Add(gz(f, minimal(f)))
	f.Fuzz(func(t *testing.T, data []byte) {
		err := validateBytes(data)
		if err != nil {
			if !errors.Is(err, ErrBadArchive) && !errors.Is(err, ErrUnsafeEntry) && !errors.Is(err, ErrNoInit) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		if detect(data) != None {
			return
		}
		tr := tar.NewReader(bytes.NewReader(data))
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("accepted archive does not parse: %v", err)
			}
			if strings.HasPrefix(h.Name, "/") || strings.Contains("/"+h.Name+"/", "/../") {
				t.Fatalf("accepted unsafe name %q", h.Name)
			}
		}
	})
}

// FuzzReroot checks that Reroot accepts exactly what Validate accepts and
// that its output keeps every entry under rootfs/, with hard links to
// earlier entries under rootfs/.
func FuzzReroot(f *testing.F) {
	f.Add(minimal(f))
	f.Add(usrmerged(f))
	f.Fuzz(func(t *testing.T, data []byte) {
		verr := Validate(bytes.NewReader(data))
		var out bytes.Buffer
		tw := tar.NewWriter(&out)
		rerr := Reroot(tw, bytes.NewReader(data), "rootfs")
		if (verr == nil) != (rerr == nil) {
			t.Fatalf("Validate: %v; Reroot: %v", verr, rerr)
		}
		if rerr != nil {
			return
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		tr := tar.NewReader(&out)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("rerooted archive does not parse: %v", err)
			}
			if !strings.HasPrefix(h.Name, "rootfs/") || strings.Contains(h.Name, "/../") {
				t.Fatalf("entry %q escapes rootfs/", h.Name)
			}
			if h.Typeflag == tar.TypeLink && !seen[h.Linkname] {
				t.Fatalf("hard link %q to %q, not an earlier entry", h.Name, h.Linkname)
			}
			seen[strings.TrimSuffix(h.Name, "/")] = true
		}
	})
}

// FuzzMetadata checks that no host-supplied string changes the structure
// of metadata.yaml as Incus decodes it (with gopkg.in/yaml.v2): the keys
// stay the same and the description comes back unchanged.
func FuzzMetadata(f *testing.F) {
	f.Add("Debian bookworm", "debian")
	f.Add("evil\narchitecture: s390x\nprofiles: [x]", "a: b")
	f.Add("{{ instance.name }}", "'\"\\")
	// The templates imagebuild writes, as Incus decodes them from a plain
	// description.
	plain, err := metadataEntries(Metadata{Architecture: "amd64", Description: "plain"})
	if err != nil {
		f.Fatal(err)
	}
	var base api.ImageMetadata
	if err := yaml.Unmarshal(plain["metadata.yaml"], &base); err != nil || len(base.Templates) == 0 {
		f.Fatalf("plain metadata.yaml: %v, %d templates", err, len(base.Templates))
	}
	f.Fuzz(func(t *testing.T, desc, extra string) {
		files, err := metadataEntries(Metadata{Architecture: "amd64", Description: desc, Properties: map[string]string{"extra": extra}})
		if err != nil {
			t.Fatal(err)
		}
		var m api.ImageMetadata
		if err := yaml.Unmarshal(files["metadata.yaml"], &m); err != nil {
			t.Fatalf("metadata.yaml does not decode: %v\n%s", err, files["metadata.yaml"])
		}
		want := 2 // architecture, extra
		if desc != "" {
			want++
		}
		if m.Architecture != "x86_64" || len(m.Properties) != want || len(m.Templates) != len(base.Templates) {
			t.Fatalf("structure changed: %+v", m)
		}
		if utf8.ValidString(desc) && m.Properties["description"] != desc {
			t.Fatalf("description %q came back as %q", desc, m.Properties["description"])
		}
	})
}
