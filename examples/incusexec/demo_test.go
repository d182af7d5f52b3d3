package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/matryer/is"
)

func TestDemoFake(t *testing.T) {
	is := is.New(t)
	r := incusexec(t, t.Context(), nil, "", "demo", "--backend", "fake")
	is.Equal(r.code, 0)
	is.True(strings.Contains(r.stdout, "NO Incus is involved"))
	is.True(strings.Contains(r.stdout, "exit-code"))
	is.True(strings.Contains(r.stdout, "done: nothing the demo created is left"))
}

// TestDemo runs the demo on a daemon that lacks the pool it is told to
// use, so that it creates one and must remove it again, and checks that
// nothing it created is left.
func TestDemo(t *testing.T) {
	is := is.New(t)
	d := incustest.Shared(t)
	pool := incustest.UniqueName("demo")
	r := incusexec(t, t.Context(), d, "", "demo", "--pool", pool)
	is.Equal(r.code, 0)
	for _, want := range []string{
		"storage pool " + pool + " created",
		"bridge iedemo-br",
		`"input pushed by the host" read by demo`,
		"after the second Unmount it is gone",
		"done: nothing the demo created is left",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	pools, err := d.Client.GetStoragePoolNames()
	is.NoErr(err)
	is.True(!slices.Contains(pools, pool))
	nets, err := d.Client.GetNetworkNames()
	is.NoErr(err)
	is.True(!slices.Contains(nets, "iedemo-br"))
	profiles, err := d.Client.GetProfileNames()
	is.NoErr(err)
	is.True(!slices.Contains(profiles, demoProfile))
	insts, err := d.Client.GetInstanceNames("")
	is.NoErr(err)
	for _, n := range insts {
		is.True(!strings.HasPrefix(n, demoPrefix))
	}
	_, _, err = d.Client.GetImageAlias("artifact/incusexec-demo-busybox")
	is.True(err != nil)
}
