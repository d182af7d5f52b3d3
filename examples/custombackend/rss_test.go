package main

import (
	"os"
	"os/exec"
	"strconv"
	"testing"
)

// TestRSSOfFreshProcess reads the memory of a process that has just
// started, which /proc/<pid>/stat's approximate counter can show as 0.
func TestRSSOfFreshProcess(t *testing.T) {
	cmd := exec.Command("/bin/sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	if rss := rssOf(strconv.Itoa(cmd.Process.Pid)); rss == 0 {
		t.Fatalf("rssOf(fresh sleep) = 0")
	}
	if rss := rssOf(strconv.Itoa(os.Getpid())); rss == 0 {
		t.Fatalf("rssOf(self) = 0")
	}
}
