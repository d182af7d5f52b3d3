package instance

import (
	"path"
	"strings"
	"testing"

	"github.com/matryer/is"
)

func FuzzEntryPath(f *testing.F) {
	for _, s := range []string{"a/b", "./", "/abs", "../x", "a/../../b", "a//b/", "", "\x00", "..", "a/.."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		p, err := entryPath(name)
		if err != nil {
			return
		}
		// What is accepted stays under the root.
		if p != "." && (strings.HasPrefix(p, "/") || p == ".." || strings.HasPrefix(p, "../") || path.Clean(p) != p) {
			t.Fatalf("entryPath(%q) = %q", name, p)
		}
		if joined := path.Join("/root", p); joined != "/root" && !strings.HasPrefix(joined, "/root/") {
			t.Fatalf("entryPath(%q) = %q escapes", name, p)
		}
	})
}

func FuzzParsePasswd(f *testing.F) {
	f.Add("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
	f.Add("bad\n::::::\nu:x:-1:2:::\nu:x:99999999999:1:::\n")
	f.Fuzz(func(t *testing.T, s string) {
		for _, e := range parsePasswd([]byte(s)) {
			if e.name == "" || strings.ContainsAny(e.name, ":\n") {
				t.Fatalf("bad entry %+v", e)
			}
		}
		for _, e := range parseGroup([]byte(s)) {
			if e.name == "" || strings.ContainsAny(e.name, ":\n") {
				t.Fatalf("bad entry %+v", e)
			}
		}
	})
}

func FuzzCheckName(f *testing.F) {
	for _, s := range []string{"a", "ab-1", "1a", "-a", "a-", "a_b", strings.Repeat("a", 64), "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if checkName(s) != nil {
			return
		}
		if len(s) == 0 || len(s) > 63 || strings.HasPrefix(s, "-") || strings.HasSuffix(s, "-") || s[0] >= '0' && s[0] <= '9' {
			t.Fatalf("checkName accepted %q", s)
		}
	})
}

func FuzzCPULimit(f *testing.F) {
	for _, s := range []string{"2", "0-3", "0-3,6", "1,2,3", "x", "3-1", "0-999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if n := cpuLimit(s); n < 0 {
			t.Fatalf("cpuLimit(%q) = %d", s, n)
		}
	})
}

func TestUnitHelpers(t *testing.T) {
	is := is.New(t)
	is.Equal(cpuLimit("0-3,6"), 5)
	is.Equal(cpuLimit("4"), 4)
	is.Equal(cpuLimit(""), 0)
	for name, want := range map[string]string{"/1.0/instances/foo": "foo", "/1.0/instances/foo?project=p": "foo", "/1.0/instances/foo/logs": "", "/1.0/images/x": ""} {
		is.Equal(instanceOfSource(name), want)
	}
	id, err := freeID(parsePasswd([]byte("a:x:1000:1000:::\n")), parseGroup([]byte("g:x:1001:\n")))
	is.NoErr(err)
	is.Equal(id, uint32(1002))
	is.Equal(string(appendLine([]byte("a"), "b")), "a\nb\n")
	is.True(isFingerprint("0123456789abcdef"))
	is.True(!isFingerprint("incustest/busybox"))
	for in, want := range map[string]string{"a/b": "a/b", "./": ".", "/x/y": "x/y", "a//b/": "a/b"} {
		got, err := entryPath(in)
		is.NoErr(err)
		is.Equal(got, want)
	}
}
