package instance

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/internal/incusop"
	"github.com/lxc/incus/v6/shared/api"
)

// Stats reads the instance state API.
func (in *Instance) Stats(ctx context.Context) (executor.Stats, error) {
	c := incusop.Bind(ctx, in.m.c)
	st, _, err := c.GetInstanceState(in.name)
	if err != nil {
		return executor.Stats{}, wrapErr(err, in.name, "get state")
	}
	inst, _, err := c.GetInstance(in.name)
	if err != nil {
		return executor.Stats{}, wrapErr(err, in.name, "get")
	}
	s := executor.Stats{
		CPUTime:     time.Duration(st.CPU.Usage),
		MemoryUsed:  byteCount(st.Memory.Usage),
		MemoryTotal: byteCount(st.Memory.Total),
		Processes:   st.Processes,
		Status:      st.Status,
	}
	s.CPUs = cpuLimit(inst.ExpandedConfig["limits.cpu"])
	if s.CPUs == 0 || s.MemoryTotal == 0 {
		if r, ok := in.m.c.(resourcer); ok {
			if res, err := r.GetServerResources(); err == nil {
				if s.CPUs == 0 {
					s.CPUs = int(res.CPU.Total)
				}
				if s.MemoryTotal == 0 {
					s.MemoryTotal = res.Memory.Total
				}
			}
		}
	}
	root := rootDisk(inst)
	if d, ok := st.Disk[root]; ok {
		s.DiskUsed = byteCount(d.Usage)
		if d.Total > 0 {
			s.DiskAvailable = byteCount(d.Total - d.Usage)
		}
	}
	return s, nil
}

// byteCount is n, or 0 for the negative counts incusd reports as unknown.
func byteCount(n int64) uint64 { return uint64(max(n, 0)) }

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
