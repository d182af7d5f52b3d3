package instance

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/incusexec/incusexec/internal/incusop"
	"github.com/lxc/incus/v6/shared/api"
)

// Stats is a snapshot of an instance's resource use.
type Stats struct {
	// CPUs is the number of CPUs the instance may use: its limits.cpu, or
	// the host's count (0 when unknown) without a limit.
	CPUs int
	// CPUTime is the CPU time consumed since the start.
	CPUTime time.Duration
	// MemoryUsed and MemoryTotal are in bytes; MemoryTotal is the limit, or
	// the host's memory without one (0 when unknown).
	MemoryUsed, MemoryTotal int64
	// DiskUsed and DiskAvailable are the root disk's bytes (DiskAvailable
	// is 0 when the pool reports no size).
	DiskUsed, DiskAvailable int64
	// Processes running in the instance (-1 when unknown).
	Processes int64
	// Status is the instance status ("Running", "Stopped", ...).
	Status string
}

// Stats reads the instance state API.
func (in *Instance) Stats(ctx context.Context) (Stats, error) {
	c := incusop.Bind(ctx, in.m.c)
	st, _, err := c.GetInstanceState(in.name)
	if err != nil {
		return Stats{}, wrapErr(err, in.name, "get state")
	}
	inst, _, err := c.GetInstance(in.name)
	if err != nil {
		return Stats{}, wrapErr(err, in.name, "get")
	}
	s := Stats{
		CPUTime:     time.Duration(st.CPU.Usage),
		MemoryUsed:  st.Memory.Usage,
		MemoryTotal: st.Memory.Total,
		Processes:   st.Processes,
		Status:      st.Status,
	}
	s.CPUs = cpuLimit(inst.ExpandedConfig["limits.cpu"])
	if s.CPUs == 0 || s.MemoryTotal <= 0 {
		if r, ok := in.m.c.(resourcer); ok {
			if res, err := r.GetServerResources(); err == nil {
				if s.CPUs == 0 {
					s.CPUs = int(res.CPU.Total)
				}
				if s.MemoryTotal <= 0 {
					s.MemoryTotal = int64(res.Memory.Total)
				}
			}
		}
	}
	root := rootDisk(inst)
	if d, ok := st.Disk[root]; ok {
		s.DiskUsed = d.Usage
		if d.Total > 0 {
			s.DiskAvailable = max(d.Total-d.Usage, 0)
		}
	}
	return s, nil
}

// cpuLimit parses limits.cpu: a count ("2") or a CPU set ("0-3,6").
func cpuLimit(v string) int {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil {
		return max(n, 0)
	}
	n := 0
	for _, part := range strings.Split(v, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(strings.TrimSpace(lo))
		if err != nil || a < 0 {
			return 0
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(strings.TrimSpace(hi)); err != nil || b < a || b-a > 1<<16 {
				return 0
			}
		}
		n += b - a + 1
	}
	return n
}

// rootDisk names the disk device mounted at /.
func rootDisk(inst *api.Instance) string {
	for name, d := range inst.ExpandedDevices {
		if d["type"] == "disk" && d["path"] == "/" {
			return name
		}
	}
	return "root"
}
