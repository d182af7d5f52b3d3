// Command wholetaskcmd measures a whole task (launch, ready, run, tear
// down) with incusexec, cold and from the warm pool, against Debusine's
// own executor code, each storage driver in a private daemon:
//
//	bash internal/bench/debusine-deps.sh   # python3-debusine, as root
//	go run ./internal/bench/wholetaskcmd [--runs N] [--pool btrfs,dir] [--json]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/incusexec/incusexec/internal/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	runs := flag.Int("runs", 5, "tasks per side and pool")
	pools := flag.String("pool", "btrfs,dir", "comma-separated storage `drivers`")
	image := flag.String("image", "", "uncompressed Debian system `tarball` with systemd (default: the cached debootstrapped one)")
	asJSON := flag.Bool("json", false, "print the table as JSON")
	verbose := flag.Bool("v", false, "log what the library does to stderr")
	flag.Parse()
	cfg := bench.WholeTaskConfig{Tarball: *image, Drivers: strings.Split(*pools, ","), Runs: *runs, Progress: os.Stderr}
	if *verbose {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	t, err := bench.WholeTask(ctx, cfg)
	if t != nil && len(t.Rows) > 0 {
		if *asJSON {
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			_ = enc.Encode(t)
		} else {
			_ = t.Print(os.Stdout)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
