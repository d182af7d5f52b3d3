package bench

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	incus "github.com/lxc/incus/v6/client"

	"github.com/incusexec/incusexec/imagebuild/imagetest"
	"github.com/incusexec/incusexec/internal/incusop"
)

// Command is `incusexec bench [--socket S] [--image TARBALL] [--pool P]
// [--runs N] [--concurrency C] [--quick] [--json] [-v]`: it connects to the
// daemon (the system's by default), runs the suite and prints the table (or
// JSON) to stdout and progress to stderr. Flag errors are returned as is
// (flag.ErrHelp for -h).
func Command(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", "", "Incus unix `socket` (default: the system daemon's, or INCUS_SOCKET/INCUS_DIR)")
	image := fs.String("image", "", "uncompressed Debian system `tarball` with systemd (default: the cached debootstrapped one of the host's suite)")
	pools := fs.String("pool", "", "comma-separated existing storage `pools` (default: create a dir and a btrfs pool, removed at the end)")
	runs := fs.Int("runs", 0, "runs per side (default 3, 1 with --quick)")
	conc := fs.Int("concurrency", 4, "parallel tasks in the throughput measurement")
	quick := fs.Bool("quick", false, "everything once, small files: check the suite, not the speed")
	asJSON := fs.Bool("json", false, "print the table as JSON")
	only := fs.String("only", "", "comma-separated measurements to run: import,ready,exec,files,teardown,throughput,warm (default all)")
	verbose := fs.Bool("v", false, "log what the library does to stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench: unexpected arguments %q", fs.Args())
	}
	c, err := incus.ConnectIncusUnix(*socket, nil)
	if err == nil {
		c = incusop.Shared(c)
	}
	if err != nil {
		return fmt.Errorf("bench: connect to Incus: %w", err)
	}
	defer c.Disconnect()
	cfg := Config{Client: c, Tarball: *image, Runs: *runs, Concurrency: *conc, Quick: *quick, Progress: stderr}
	if *socket != "" {
		cfg.CLIEnv = []string{"INCUS_SOCKET=" + *socket}
	}
	if *only != "" {
		cfg.Only = strings.Split(*only, ",")
	}
	if *pools != "" {
		cfg.Pools = strings.Split(*pools, ",")
	}
	if *verbose {
		cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if cfg.Tarball == "" {
		if cfg.Tarball, err = (imagetest.Debian{Suite: imagetest.HostSuite()}).Tarball(); err != nil {
			return fmt.Errorf("bench: Debian tarball: %w", err)
		}
	}
	t, err := Run(ctx, cfg)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(t)
	}
	return t.Print(stdout)
}
