package clustertest_test

import (
	"testing"

	"github.com/incusexec/incusexec/internal/incustest"
)

func TestMain(m *testing.M) { incustest.Main(m) }
