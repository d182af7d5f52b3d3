package incustest

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// sweepStale removes what test daemons of dead processes left behind: a test
// binary killed by SIGKILL never reaches its teardown. A daemon directory is
// named incustest-<pid>-<random>; when <pid> is no longer alive, its
// processes (incusd, LXC monitors and their containers, dnsmasq) are killed,
// its mounts and loop devices released, its bridges and their nftables
// chains deleted and the directory removed; the chains of test bridges gone
// earlier go too (sweepOrphanChains). Errors are returned but do not stop
// the sweep.
func sweepStale() error {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "incustest-*-*"))
	var errs []string
	for _, dir := range dirs {
		pid, ok := ownerPID(filepath.Base(dir))
		if !ok || pidAlive(pid) {
			continue
		}
		if err := sweepDir(dir); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if err := sweepOrphanChains(); err != nil {
		errs = append(errs, err.Error())
	}
	if len(errs) > 0 {
		return fmt.Errorf("incustest: sweeping stale daemons: %s", strings.Join(errs, "; "))
	}
	return nil
}

// ownerPID reads the PID of the test process that made a daemon directory
// (incustest-<pid>-<random>) or a cluster directory
// (incustest-cluster-<pid>-<random>).
func ownerPID(base string) (int, bool) {
	rest, ok := strings.CutPrefix(base, "incustest-")
	if !ok {
		return 0, false
	}
	rest = strings.TrimPrefix(rest, "cluster-")
	digits, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	pid, err := strconv.Atoi(digits)
	return pid, err == nil && pid > 0
}

func pidAlive(pid int) bool {
	if pid == os.Getpid() {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// A zombie is dead for our purpose.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || !strings.HasPrefix(strings.TrimSpace(s[i+1:]), "Z")
}

func sweepDir(dir string) error {
	// Kill every process that names the directory, and their descendants
	// (the containers under their LXC monitors).
	children := map[int][]int{}
	var roots []int
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		f := strings.Fields(s[i+1:])
		if len(f) > 1 {
			ppid, _ := strconv.Atoi(f[1])
			children[ppid] = append(children[ppid], pid)
		}
		if refersTo(filepath.Dir(p), dir) {
			roots = append(roots, pid)
		}
	}
	var kill func(int)
	seen := map[int]bool{}
	kill = func(pid int) {
		if seen[pid] || pid == os.Getpid() || pid <= 1 {
			return
		}
		seen[pid] = true
		for _, c := range children[pid] {
			kill(c)
		}
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	for _, r := range roots {
		kill(r)
	}
	reapZombies()
	// Bridges the daemon created are recorded under networks/.
	nets, _ := os.ReadDir(filepath.Join(dir, "networks"))
	var errs []error
	for _, n := range nets {
		if _, err := net.InterfaceByName(n.Name()); err == nil {
			_ = exec.Command("ip", "link", "delete", n.Name()).Run()
		}
		errs = append(errs, ClearFirewall(n.Name()))
	}
	// Unmount deepest first.
	var mounts []string
	if f, err := os.Open("/proc/self/mountinfo"); err == nil {
		s := bufio.NewScanner(f)
		for s.Scan() {
			fields := strings.Fields(s.Text())
			if len(fields) > 4 && strings.HasPrefix(fields[4], dir) {
				mounts = append(mounts, fields[4])
			}
		}
		f.Close()
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		_ = syscall.Unmount(mounts[i], syscall.MNT_DETACH)
	}
	backing, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, p := range backing {
		b, _ := os.ReadFile(p)
		if strings.HasPrefix(strings.TrimSpace(string(b)), dir) {
			_ = exec.Command("losetup", "-d", "/dev/"+strings.Split(p, "/")[3]).Run()
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", dir, err))
	}
	return errors.Join(errs...)
}

// refersTo reports whether the process at procDir (/proc/<pid>) belongs to
// the daemon or cluster in dir: its command line names dir (LXC monitors,
// dnsmasq, forkfile helpers) or its INCUS_DIR is dir or below it (incusd).
func refersTo(procDir, dir string) bool {
	cmd, _ := os.ReadFile(filepath.Join(procDir, "cmdline"))
	if strings.Contains(string(cmd), dir) {
		return true
	}
	env, _ := os.ReadFile(filepath.Join(procDir, "environ"))
	for _, kv := range strings.Split(string(env), "\x00") {
		// A cluster member's INCUS_DIR lies below the cluster's directory.
		if kv == "INCUS_DIR="+dir || strings.HasPrefix(kv, "INCUS_DIR="+dir+"/") {
			return true
		}
	}
	return false
}
