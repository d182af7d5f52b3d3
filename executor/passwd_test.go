package executor

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestLookupPasswd(t *testing.T) {
	passwd := "root:x:0:0:root:/root:/bin/sh\n_debusine:x:999:998::/home/_debusine:/bin/sh\nbad:x:z:1::/:/bin/sh\nshort:x:1\n"
	for _, tc := range []struct {
		name string
		want User
		ok   bool
	}{
		{"root", User{Name: "root", Home: "/root"}, true},
		{"_debusine", User{Name: "_debusine", UID: 999, GID: 998, Home: "/home/_debusine"}, true},
		{"bad", User{}, false},
		{"short", User{}, false},
		{"nobody", User{}, false},
	} {
		got, ok := lookupPasswd([]byte(passwd), tc.name)
		if got != tc.want || ok != tc.ok {
			t.Errorf("lookupPasswd(%s) = %+v, %v; want %+v, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

// The instance's /etc/passwd is written by whatever runs in it: untrusted.
func FuzzLookupPasswd(f *testing.F) {
	f.Add([]byte("root:x:0:0:root:/root:/bin/sh\n"), "root")
	f.Add([]byte("a:x:1:2::/h:/bin/sh\r\na:x:3:4::/i:/bin/sh"), "a")
	f.Add([]byte(":::::::\n"), "")
	f.Fuzz(func(t *testing.T, b []byte, name string) {
		u, ok := lookupPasswd(b, name)
		if ok && (u.Name != name || strings.Contains(u.Home, "\n")) {
			t.Errorf("lookupPasswd(%q, %q) = %+v", b, name, u)
		}
	})
}

func TestMapErrKeepsBothSentinels(t *testing.T) {
	for _, s := range partSentinels {
		err := mapErr(fmt.Errorf("instance x: %w", s.part))
		if !errors.Is(err, s.part) || !errors.Is(err, s.ours) || err.Error() != "instance x: "+s.part.Error() {
			t.Errorf("mapErr(%v) = %v; want it to wrap %v and %v with the message unchanged", s.part, err, s.part, s.ours)
		}
	}
	if mapErr(nil) != nil {
		t.Error("mapErr(nil) != nil")
	}
	plain := errors.New("plain")
	if mapErr(plain) != plain {
		t.Error("mapErr changed an error of no part")
	}
}
