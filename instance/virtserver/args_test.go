package virtserver

import (
	"errors"
	"strings"
	"testing"

	"github.com/incusexec/incusexec/instance"
	"github.com/matryer/is"
)

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want Args
		err  string
	}{
		{name: "image only", args: []string{"images:debian/12"},
			want: Args{Image: "images:debian/12", Spec: instance.Spec{Image: "images:debian/12"}}},
		{name: "debusine container", args: []string{"artifact/42", "--", "--profile", "debusine"},
			want: Args{Image: "artifact/42", Spec: instance.Spec{Image: "artifact/42", Profiles: []string{"debusine"}}}},
		{name: "debusine vm", args: []string{"--vm", "artifact/42", "--", "--profile", "debusine"},
			want: Args{Image: "artifact/42", VM: true, Spec: instance.Spec{Image: "artifact/42", VM: true, Profiles: []string{"debusine"}}}},
		{name: "debug and launch options", args: []string{"-d", "img", "-p", "a", "--profile=b", "-c", "limits.cpu=2", "-s", "fast", "-e"},
			want: Args{Image: "img", Debug: true, Spec: instance.Spec{Image: "img", Profiles: []string{"a", "b"},
				Config:  map[string]string{"limits.cpu": "2"},
				Devices: map[string]map[string]string{"root": {"type": "disk", "path": "/", "pool": "fast"}}}}},
		{name: "no image", args: []string{"-d"}, err: "missing IMAGE"},
		{name: "remote", args: []string{"-r", "x", "img"}, err: "-r"},
		{name: "unknown launch arg", args: []string{"img", "--", "--target", "m1"}, err: `"--target"`},
		{name: "profile without value", args: []string{"img", "--", "--profile"}, err: "needs a value"},
		{name: "bad config", args: []string{"img", "-c", "novalue"}, err: "KEY=VALUE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			got, err := ParseArgs(tt.args)
			if tt.err != "" {
				is.True(errors.Is(err, ErrUsage))
				is.True(err != nil && strings.Contains(err.Error(), tt.err)) // names the argument at fault
				return
			}
			is.NoErr(err)
			is.Equal(got, tt.want)
		})
	}
}

func TestFirstNormalUser(t *testing.T) {
	is := is.New(t)
	passwd := "root:x:0:0::/root:/bin/bash\nnobody:x:65534:65534::/:/usr/sbin/nologin\nzed:x:1001:1001::/home/zed:/bin/sh\ndebci:x:1000:1000::/home/debci:/bin/bash\n"
	is.Equal(firstNormalUser(passwd), "debci")
	is.Equal(firstNormalUser("root:x:0:0::/root:/bin/bash\n"), "")
}
