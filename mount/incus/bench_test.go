package incus_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/incusexec/incusexec/executor"
	mountincus "github.com/incusexec/incusexec/mount/incus"

	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/incusexec/incusexec/mount"
)

// BenchmarkAttach compares, on one running container, attaching and
// detaching a host directory through mountincus.Manager with doing the same by
// hand over the raw API (read, add the device, write; read, remove, write)
// and with the incus CLI; then the cost of a hold on an attached alias and
// of 50 concurrent holds. It prints a table at the end.
//
//	go test -run '^$' -bench Attach -benchtime 20x ./mount/
func BenchmarkAttach(b *testing.B) {
	d := incustest.Shared(b)
	d.BusyboxImage(b)
	inst := createInstance(b, d)
	src := b.TempDir()
	ctx := context.Background()
	m, err := mountincus.New(mountincus.Config{Client: d.Client, AllowedRoots: []string{src}})
	if err != nil {
		b.Fatal(err)
	}
	var mu sync.Mutex
	perOp := map[string]time.Duration{}
	record := func(b *testing.B, name string, start time.Time, ops int) {
		mu.Lock()
		perOp[name] = time.Since(start) / time.Duration(ops)
		mu.Unlock()
	}
	rows := []string{"mountincus.Manager attach+detach", "raw API attach+detach", "incus CLI attach+detach", "mountincus.Manager hold+release (attached)", "mountincus.Manager 50 concurrent holds (per hold)"}

	b.Run("manager", func(b *testing.B) {
		start := time.Now()
		for b.Loop() {
			hd, err := m.Acquire(ctx, inst, "bench", src, executor.MountOptions{})
			if err != nil {
				b.Fatal(err)
			}
			if err := m.Release(ctx, hd); err != nil {
				b.Fatal(err)
			}
		}
		record(b, rows[0], start, b.N)
	})
	b.Run("raw-api", func(b *testing.B) {
		edit := func(f func(map[string]map[string]string)) {
			i, etag, err := d.Client.GetInstance(inst)
			if err != nil {
				b.Fatal(err)
			}
			put := i.Writable()
			f(put.Devices)
			op, err := d.Client.UpdateInstance(inst, put, etag)
			if err == nil {
				err = op.Wait()
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		start := time.Now()
		for b.Loop() {
			edit(func(dev map[string]map[string]string) {
				dev["raw"] = map[string]string{"type": "disk", "source": src, "path": "/data/raw"}
			})
			edit(func(dev map[string]map[string]string) { delete(dev, "raw") })
		}
		record(b, rows[1], start, b.N)
	})
	b.Run("cli", func(b *testing.B) {
		incusCLI := func(args ...string) {
			cmd := exec.Command("incus", args...)
			cmd.Env = append(os.Environ(), "INCUS_DIR="+d.Dir)
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("incus %v: %v: %s", args, err, out)
			}
		}
		start := time.Now()
		for b.Loop() {
			incusCLI("config", "device", "add", inst, "cli", "disk", "source="+src, "path=/data/cli")
			incusCLI("config", "device", "remove", inst, "cli")
		}
		record(b, rows[2], start, b.N)
	})
	b.Run("hold", func(b *testing.B) {
		keep, err := m.Acquire(ctx, inst, "bench", src, executor.MountOptions{})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		for b.Loop() {
			hd, err := m.Acquire(ctx, inst, "bench", src, executor.MountOptions{})
			if err != nil {
				b.Fatal(err)
			}
			if err := m.Release(ctx, hd); err != nil {
				b.Fatal(err)
			}
		}
		record(b, rows[3], start, b.N)
		if err := m.Release(ctx, keep); err != nil {
			b.Fatal(err)
		}
	})
	b.Run("concurrent50", func(b *testing.B) {
		start := time.Now()
		for b.Loop() {
			var wg sync.WaitGroup
			hs := make([]mount.Handle, 50)
			for i := range hs {
				wg.Go(func() {
					var err error
					if hs[i], err = m.Acquire(ctx, inst, "bench", src, executor.MountOptions{}); err != nil {
						b.Error(err)
					}
				})
			}
			wg.Wait()
			for i := range hs {
				wg.Go(func() {
					if err := m.Release(ctx, hs[i]); err != nil {
						b.Error(err)
					}
				})
			}
			wg.Wait()
		}
		record(b, rows[4], start, b.N*50)
	})

	fmt.Printf("\n%-46s %12s\n", "attach a directory to a running container", "per op")
	for _, r := range rows {
		if v, ok := perOp[r]; ok {
			fmt.Printf("%-46s %12s\n", r, v.Round(100*time.Microsecond))
		}
	}
}
