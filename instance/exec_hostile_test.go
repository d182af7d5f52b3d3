package instance_test

import (
	"errors"
	"testing"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/instance"
	"github.com/matryer/is"
)

// TestExecRefusesMalformedEnvironment: environment names and values from a
// host's request that the instance would read as something else ("A=B" sets
// A; NUL cuts the string) are refused before anything runs.
func TestExecRefusesMalformedEnvironment(t *testing.T) {
	t.Parallel()
	_, m, _ := setup(t, instance.Config{})
	in := launch(t, m, instance.Spec{})
	for name, env := range map[string]map[string]string{
		"empty name":    {"": "x"},
		"= in name":     {"PATH=/evil:": "x"},
		"NUL in name":   {"A\x00B": "x"},
		"NUL in value":  {"A": "x\x00LD_PRELOAD=/tmp/x"},
		"only = in key": {"=": ""},
	} {
		t.Run(name, func(t *testing.T) {
			is := is.New(t)
			_, err := in.Exec(ctxFor(t, time.Minute), executor.Cmd{Args: []string{"true"}, Env: env})
			is.True(errors.Is(err, instance.ErrInvalid))
		})
	}
}
