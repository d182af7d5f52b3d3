package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// cpuMeter reads how busy the host's CPUs were, and how much CPU time the
// daemon (with its reaped children: forkstart, monitors) used, between two
// points: what tells a CPU-bound measurement from one that waits.
type cpuMeter struct {
	pid                int
	busy0, total0      uint64
	daemon0            uint64
	hostBusy, daemonCP []float64 // per measured span: busy fraction, daemon CPU seconds
}

const clockTicks = 100 // USER_HZ on Linux

func hostCPU() (busy, total uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	for i, s := range f[1:] {
		v, _ := strconv.ParseUint(s, 10, 64)
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total
}

func procCPU(pid int) uint64 {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	var sum uint64
	for _, k := range []int{11, 12, 13, 14} { // utime stime cutime cstime
		if k < len(f) {
			v, _ := strconv.ParseUint(f[k], 10, 64)
			sum += v
		}
	}
	return sum
}

func (c *cpuMeter) start() {
	c.busy0, c.total0 = hostCPU()
	c.daemon0 = procCPU(c.pid)
}

func (c *cpuMeter) stop() {
	busy, total := hostCPU()
	if total > c.total0 {
		c.hostBusy = append(c.hostBusy, float64(busy-c.busy0)/float64(total-c.total0))
	}
	if c.pid > 0 {
		c.daemonCP = append(c.daemonCP, float64(procCPU(c.pid)-c.daemon0)/clockTicks)
	}
}

func (c *cpuMeter) String() string {
	if len(c.hostBusy) == 0 {
		return "no CPU data"
	}
	s := fmt.Sprintf("host CPUs %.0f%% busy", 100*median(c.hostBusy))
	if len(c.daemonCP) > 0 {
		s += fmt.Sprintf(", incusd used %.1f CPU-s", median(c.daemonCP))
	}
	return s
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s[len(s)/2]
}
