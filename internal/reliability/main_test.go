package reliability_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/incusexec/incusexec/internal/incustest"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain())
	}
	incustest.Main(m)
}

// ctxFor returns a context that ends after d or at the test's end.
func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
