package incustest

import "testing"

func TestOwnerPID(t *testing.T) {
	for base, want := range map[string]int{
		"incustest-123-456789":         123,
		"incustest-cluster-77-1234":    77,
		"incustest-subnets.lock":       0,
		"incustest-cluster-x-1":        0,
		"something-else-12-3":          0,
		"incustest-cluster-25660-3675": 25660,
	} {
		pid, ok := ownerPID(base)
		if ok != (want != 0) || pid != want {
			t.Errorf("ownerPID(%q) = %d, %v; want %d", base, pid, ok, want)
		}
	}
}
