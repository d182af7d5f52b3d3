package imagetest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
)

// ErrMissingTool says that a tool the builders need is not installed, or
// that they lack the privileges to use it.
var ErrMissingTool = errors.New("imagetest: required tool unavailable")

// CacheDir is where built tarballs are kept between runs, outside any
// repository: $INCUSEXEC_TEST_CACHE, or /var/cache/incusexec-test.
func CacheDir() string {
	if d := os.Getenv("INCUSEXEC_TEST_CACHE"); d != "" {
		return d
	}
	return "/var/cache/incusexec-test"
}

// Compressed returns path compressed with "gz", "xz" or "zst", building the
// compressed file beside path on first use (once across processes).
func Compressed(path, ext string) (string, error) {
	out := path + "." + ext
	unlock, err := lockFile(out + ".lock")
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	var tool []string
	switch ext {
	case "gz":
		tool = []string{"gzip", "-c", "-6"}
	case "xz":
		tool = []string{"xz", "-c", "-T0", "-6"}
	case "zst":
		tool = []string{"zstd", "-c", "-q", "-T0", "-19"}
	default:
		return "", fmt.Errorf("imagetest: unknown compression %q of %s (want gz, xz or zst)", ext, path)
	}
	if _, err := exec.LookPath(tool[0]); err != nil {
		return "", fmt.Errorf("%w: %s not installed", ErrMissingTool, tool[0])
	}
	f, err := os.Create(out + ".tmp")
	if err != nil {
		return "", err
	}
	cmd := exec.Command(tool[0], append(tool[1:], path)...)
	cmd.Stdout = f
	if err := cmd.Run(); err != nil {
		f.Close()
		os.Remove(out + ".tmp")
		return "", fmt.Errorf("%s %s: %w", tool[0], path, err)
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return out, os.Rename(out+".tmp", out)
}

// lockFile takes an exclusive lock shared with other processes.
func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
