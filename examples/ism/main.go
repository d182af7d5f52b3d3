// Command ism is what an ISM-style gateway (an Isabelle server manager)
// does with incusexec: it keeps a pool of long-running server instances on
// a bridge named after its prefix, shares host directories with them by
// alias, and talks to each server over the bridge.
//
//	go run ./examples/ism                  # 3 servers; Ctrl-C shuts them down gracefully
//	go run ./examples/ism -n 2 -once       # start, check, shut down
//	go run ./examples/ism -clean-network   # first remove what a previous run left
//
// What it does:
//
//   - -clean-network first deletes the owner's instances that a previous
//     (crashed) run left, then its bridge, profile and ACLs
//     (incus.Backend GC and Cleanup, as ISM's flag of that name does);
//   - makes sure of the NAT-less bridge <prefix>-br and the profile <prefix>
//     (netbridge, through the executor's Config), and of a busybox image
//     built from busybox-static (imagebuild);
//   - builds the stand-in server (./server: a static Go binary, built with
//     CGO_ENABLED=0) and, into each of N persistent instances created
//     stopped, pushes it with an inittab line that makes init run and
//     respawn it; then starts them (ready when eth0 has an IPv4 address);
//   - mounts the host directory of "Isabelle heaps" read-only by alias in
//     every server at /data/<hash of the alias> (mount, reference-counted
//     on the server: the pool holds one reference per server);
//   - as the gateway, connects to each server at its address on the bridge
//     (the host reaches the NAT-less bridge directly) and asks it to read
//     the shared heap file;
//   - opens a session on two servers: each session acquires a writable
//     session directory and the heaps once more; one server writes, the
//     other reads, the host sees it; closing the session releases its
//     references, and the heaps stay mounted for the pool's;
//   - serves until SIGINT or SIGTERM (or at once with -once), then shuts
//     down gracefully: releases the mounts, stops the servers (init's
//     shutdown), deletes them. The bridge, profile and image stay for the
//     next start, unless -cleanup.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/incusexec/incusexec/executor/incus"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/imagebuild"
	"github.com/incusexec/incusexec/imagebuild/imagetest"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/mount"
	"github.com/incusexec/incusexec/netbridge"
	incusclient "github.com/lxc/incus/v6/client"
	"golang.org/x/sync/errgroup"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() { <-ctx.Done(); stop() }()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

const (
	heapsAlias = "isabelle/heaps"
	serverPath = "/usr/local/bin/isabelle-server"
)

type options struct {
	socket, prefix, owner, pool, shared  string
	n, port                              int
	cleanNetwork, once, cleanup, verbose bool
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var o options
	fs := flag.NewFlagSet("ism", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.socket, "socket", "", "Incus unix `socket` (default: the system daemon's)")
	fs.IntVar(&o.n, "n", 3, "`number` of servers in the pool")
	fs.StringVar(&o.prefix, "prefix", "ism", "`prefix` of the bridge (<prefix>-br), the profile and the instance names")
	fs.StringVar(&o.owner, "owner", "ism-example", "owner `label` of everything created")
	fs.StringVar(&o.pool, "pool", "", "storage `pool` (default: default, else the first, else a dir pool made for the run)")
	fs.StringVar(&o.shared, "shared", "", "host `directory` holding the shared directories (default: a temporary one)")
	fs.IntVar(&o.port, "port", 4711, "TCP `port` the servers listen on")
	fs.BoolVar(&o.cleanNetwork, "clean-network", false, "first remove the instances, bridge and profile a previous run left")
	fs.BoolVar(&o.once, "once", false, "shut down after the checks instead of serving until interrupted")
	fs.BoolVar(&o.cleanup, "cleanup", false, "at exit also remove the bridge, the profile and the image")
	fs.BoolVar(&o.verbose, "v", false, "log what the library does")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if o.n < 1 {
		fmt.Fprintln(stderr, "ism: -n must be at least 1")
		return 2
	}
	if err := (&gateway{o: o, stdout: stdout, stderr: stderr, start: time.Now()}).run(ctx); err != nil {
		fmt.Fprintf(stderr, "ism: %v\n", err)
		return 1
	}
	return 0
}

// gateway is the ISM side: the pool, its mounts and its connections.
type gateway struct {
	o              options
	stdout, stderr io.Writer
	start          time.Time

	client  incusclient.InstanceServer
	backend *incus.Backend
	ex      *incus.Executor
	servers []*server
}

// server is one pool member.
type server struct {
	in   executor.Instance
	addr string // host:port on the bridge
}

func (g *gateway) say(format string, args ...any) {
	fmt.Fprintf(g.stdout, "[%5.1fs] %s\n", time.Since(g.start).Seconds(), fmt.Sprintf(format, args...))
}

func (g *gateway) run(ctx context.Context) (err error) {
	log := slog.New(slog.DiscardHandler)
	if g.o.verbose {
		log = slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	// The connection outlives a cancelled ctx: shutting down needs it, and
	// the client keeps the context it was made with for its requests.
	bg := context.WithoutCancel(ctx)
	if g.client, err = incusclient.ConnectIncusUnixWithContext(bg, g.o.socket, nil); err != nil {
		return fmt.Errorf("connect to Incus: %w", err)
	}
	cfg := incus.Config{Client: g.client, Owner: g.o.owner, Prefix: g.o.prefix + "-", Logger: log}

	if g.o.cleanNetwork {
		if err := g.cleanPrevious(ctx, cfg); err != nil {
			return err
		}
	}
	shared := g.o.shared
	if shared == "" {
		if shared, err = os.MkdirTemp("", "ism-shared-"); err != nil {
			return err
		}
		defer os.RemoveAll(shared)
	}
	heaps, err := prepareShared(shared)
	if err != nil {
		return err
	}

	pool, madePool, err := incus.EnsurePool(ctx, g.client, incus.PoolSpec{Name: g.o.pool, Fallback: "ism-example",
		Owner: g.o.owner, Description: "created by the ism example for " + g.o.owner})
	if err != nil {
		return err
	}
	cfg.Network = &netbridge.NetworkSpec{Prefix: g.o.prefix, NAT: false}
	cfg.Profile = &netbridge.ProfileSpec{Name: g.o.prefix, Pool: pool, NICName: "eth0"}
	cfg.Ready = instance.Ready{NIC: "eth0", Family: "inet", Timeout: time.Minute}
	cfg.AllowedRoots = []string{shared}
	cfg.StopGrace = 20 * time.Second
	if g.backend, err = incus.NewBackend(bg, cfg); err != nil {
		return err
	}
	n := g.backend.Network()
	g.say("bridge %s %s (NAT off), profile %s (root on %s)", n.Name, n.IPv4, g.backend.Profile().Name, pool)

	tarball, err := imagetest.Busybox()
	if err != nil {
		return err
	}
	g.ex, err = g.backend.Executor(incus.Image{
		ID:       "ism-example-busybox",
		Open:     func(context.Context) (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(tarball)), nil },
		Metadata: imagebuild.Metadata{Description: "ism example: busybox", OS: "busybox"},
	})
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(bg, 2*time.Minute)
		defer cancel()
		err = errors.Join(err, g.shutdown(cctx, madePool, pool))
	}()
	if err := g.ex.EnsureImage(ctx); err != nil {
		return err
	}
	g.say("image %s ready", g.ex.Image())

	bin, err := buildServer(ctx)
	if err != nil {
		return err
	}
	defer os.RemoveAll(filepath.Dir(bin))
	st, _ := os.Stat(bin)
	g.say("built the server: CGO_ENABLED=0 go build ./examples/ism/server (%.1f MB, static)", float64(st.Size())/1e6)

	t0 := time.Now()
	if err := g.startPool(ctx, bin, heaps, shared); err != nil {
		return err
	}
	g.say("pool of %d servers up in %.1fs; the gateway asks each over the bridge:", len(g.servers), time.Since(t0).Seconds())
	tw := tabwriter.NewWriter(g.stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "         server\taddress\tping\tread %s/HOL.heap-info\n", mount.Path(heapsAlias))
	for _, s := range g.servers {
		pong, err := ask(ctx, s.addr, "ping")
		if err != nil {
			return err
		}
		heap, err := ask(ctx, s.addr, "read "+mount.Path(heapsAlias)+"/HOL.heap-info")
		if err != nil {
			return err
		}
		fmt.Fprintf(tw, "         %s\t%s\t%s\t%s\n", s.in.Name(), s.addr, pong, heap)
	}
	tw.Flush()

	if err := g.session(ctx, "alice", shared); err != nil {
		return err
	}

	if g.o.once {
		return nil
	}
	g.say("serving; SIGINT or SIGTERM (Ctrl-C) shuts the pool down")
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			g.say("signal received: shutting down")
			return nil
		case <-tick.C:
			for _, s := range g.servers {
				if _, err := ask(ctx, s.addr, "ping"); err != nil && ctx.Err() == nil {
					g.say("health check: %s does not answer: %v", s.in.Name(), err)
				}
			}
		}
	}
}

// cleanPrevious removes what an earlier run of this owner left behind.
func (g *gateway) cleanPrevious(ctx context.Context, cfg incus.Config) error {
	b, err := incus.NewBackend(ctx, cfg)
	if err != nil {
		return err
	}
	defer b.Close()
	deleted, err := b.GC(ctx, 0, nil)
	if err != nil {
		return fmt.Errorf("-clean-network: %w", err)
	}
	changes, err := b.Cleanup(ctx)
	if err != nil {
		return fmt.Errorf("-clean-network: %w", err)
	}
	var removed []string
	for _, d := range deleted {
		removed = append(removed, "instance "+d)
	}
	for _, c := range changes {
		removed = append(removed, c.Kind+" "+c.Name)
	}
	if len(removed) == 0 {
		removed = []string{"nothing was left"}
	}
	g.say("-clean-network: %s", strings.Join(removed, ", "))
	return nil
}

// prepareShared makes the shared directories: the heaps (read-only in the
// servers) and the sessions' parent.
func prepareShared(root string) (string, error) {
	heaps := filepath.Join(root, "heaps")
	if err := os.MkdirAll(heaps, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(heaps, "HOL.heap-info"), []byte("HOL heap, built on the host\n"), 0o644); err != nil {
		return "", err
	}
	return heaps, os.MkdirAll(filepath.Join(root, "sessions"), 0o755)
}

// startPool creates the servers stopped, gives each the server binary and
// an inittab line that runs it, starts them, and mounts the heaps.
func (g *gateway) startPool(ctx context.Context, bin, heaps, shared string) error {
	g.servers = make([]*server, g.o.n)
	eg, ectx := errgroup.WithContext(ctx)
	for i := range g.servers {
		eg.Go(func() error {
			in, err := g.ex.Create(ectx, executor.Spec{ID: "ism-server-" + strconv.Itoa(i)})
			if err != nil {
				return err
			}
			g.servers[i] = &server{in: in}
			f, err := os.Open(bin)
			if err != nil {
				return err
			}
			defer f.Close()
			if err := in.Push(ectx, serverPath, f, executor.FileOptions{Mode: 0o755, MkdirAll: true}); err != nil {
				return err
			}
			var inittab bytes.Buffer
			if _, err := in.Pull(ectx, "/etc/inittab", &inittab); err != nil {
				return err
			}
			fmt.Fprintf(&inittab, "::respawn:%s -listen :%d\n", serverPath, g.o.port)
			if err := in.Push(ectx, "/etc/inittab", &inittab, executor.FileOptions{Mode: 0o644}); err != nil {
				return err
			}
			if err := in.Start(ectx); err != nil {
				return err
			}
			if _, err := in.Mount(ectx, heapsAlias, heaps, executor.MountOptions{ReadOnly: true}); err != nil {
				return err
			}
			ip, err := g.address(ectx, in)
			if err != nil {
				return err
			}
			g.servers[i].addr = net.JoinHostPort(ip, strconv.Itoa(g.o.port))
			return waitAnswer(ectx, g.servers[i].addr)
		})
	}
	return eg.Wait()
}

// address is the server's IPv4 address on eth0. The executor interface
// has no call for it; the Incus backend's instances hand out their
// instance package handle (Part), whose Addresses has.
func (g *gateway) address(ctx context.Context, in executor.Instance) (string, error) {
	incusInstance, ok := in.(interface{ Part() *instance.Instance })
	if !ok {
		return "", fmt.Errorf("instance %s is not an Incus instance", in.Name())
	}
	addrs, err := incusInstance.Part().Addresses(ctx)
	if err != nil {
		return "", err
	}
	for _, a := range addrs {
		if a.NIC == "eth0" && a.Addr.Is4() {
			return a.Addr.String(), nil
		}
	}
	return "", fmt.Errorf("instance %s has no IPv4 address on eth0", in.Name())
}

// session shows reference counting: a session acquires a writable session
// directory and the heaps once more on two servers, one writes, the other
// reads; closing the session releases exactly its references.
func (g *gateway) session(ctx context.Context, name, shared string) error {
	alias := "sessions/" + name
	dir := filepath.Join(shared, "sessions", name)
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return err
	}
	// The containers' root is an unprivileged host uid.
	if err := os.Chmod(dir, 0o777); err != nil {
		return err
	}
	on := g.servers[:min(2, len(g.servers))]
	var p string
	for _, s := range on {
		var err error
		if p, err = s.in.Mount(ctx, alias, dir, executor.MountOptions{}); err != nil {
			return err
		}
		if _, err := s.in.Mount(ctx, heapsAlias, filepath.Join(shared, "heaps"), executor.MountOptions{ReadOnly: true}); err != nil {
			return err
		}
	}
	first, last := on[0], on[len(on)-1]
	if got, err := ask(ctx, first.addr, "write "+p+"/result.txt theorem proved on "+first.in.Name()); err != nil || got != "ok" {
		return fmt.Errorf("write in session %s on %s: %q, %v", name, first.in.Name(), got, err)
	}
	got, err := ask(ctx, last.addr, "read "+p+"/result.txt")
	if err != nil {
		return err
	}
	onHost, err := os.ReadFile(filepath.Join(dir, "result.txt"))
	if err != nil {
		return err
	}
	g.say("session %s on %d server(s): %s at %s; %s wrote result.txt, %s reads %q, the host %q",
		name, len(on), alias, p, first.in.Name(), last.in.Name(), got, strings.TrimSpace(string(onHost)))
	for _, s := range on {
		if err := s.in.Unmount(ctx, alias); err != nil {
			return err
		}
		if err := s.in.Unmount(ctx, heapsAlias); err != nil {
			return err
		}
	}
	gone, err := ask(ctx, first.addr, "ls "+p)
	if err != nil {
		return err
	}
	heap, err := ask(ctx, first.addr, "read "+mount.Path(heapsAlias)+"/HOL.heap-info")
	if err != nil {
		return err
	}
	if !strings.HasPrefix(heap, "HOL heap") {
		return fmt.Errorf("heaps gone from %s after the session released its hold: %q", first.in.Name(), heap)
	}
	g.say("session %s closed: %s released (ls now: %q); the heaps stay mounted for the pool's own hold", name, alias, gone)
	return nil
}

// shutdown releases the pool's mounts, stops and deletes the servers, and
// with -cleanup removes the bridge, the profile, the image and a pool made
// for the run.
func (g *gateway) shutdown(ctx context.Context, madePool bool, pool string) error {
	var errs []error
	t0 := time.Now()
	eg := errgroup.Group{}
	stopped := 0
	for _, s := range g.servers {
		if s == nil {
			continue
		}
		stopped++
		eg.Go(func() error {
			err := s.in.Unmount(ctx, heapsAlias)
			if err != nil && !errors.Is(err, executor.ErrNotMounted) && !errors.Is(err, executor.ErrNotFound) {
				return err
			}
			if err := s.in.Stop(ctx); err != nil {
				return err
			}
			return s.in.Delete(ctx)
		})
	}
	errs = append(errs, eg.Wait())
	if stopped > 0 {
		g.say("released the mounts, stopped and deleted %d server(s) in %.1fs", stopped, time.Since(t0).Seconds())
	}
	if g.backend == nil {
		return errors.Join(errs...)
	}
	defer g.backend.Close()
	if !g.o.cleanup {
		g.say("the bridge, the profile and the image stay for the next start (-clean-network or -cleanup removes them)")
		return errors.Join(errs...)
	}
	var removed []string
	if g.ex != nil {
		if err := g.ex.RemoveImage(ctx); err != nil {
			errs = append(errs, err)
		} else {
			removed = append(removed, "image "+g.ex.Image())
		}
	}
	changes, err := g.backend.Cleanup(ctx)
	errs = append(errs, err)
	for _, c := range changes {
		removed = append(removed, c.Kind+" "+c.Name)
	}
	if madePool && err == nil {
		if err := incus.RemovePool(ctx, g.client, pool, g.o.owner); err != nil {
			errs = append(errs, err)
		} else {
			removed = append(removed, "storage-pool "+pool)
		}
	}
	g.say("cleaned up: %s", strings.Join(removed, ", "))
	return errors.Join(errs...)
}

// ask sends one request and returns the one-line answer.
func ask(ctx context.Context, addr, req string) (string, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintln(c, req); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("%s: %q: %w", addr, req, err)
	}
	return strings.TrimSuffix(line, "\n"), nil
}

// waitAnswer waits until the server at addr answers (init starts it soon
// after boot).
func waitAnswer(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		if _, err := ask(ctx, addr, "ping"); err == nil {
			return nil
		} else if ctx.Err() != nil {
			return fmt.Errorf("server at %s does not answer: %w", addr, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// buildServer builds ./server as a static binary.
func buildServer(ctx context.Context) (string, error) {
	dir, err := os.MkdirTemp("", "ism-server-")
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "isabelle-server")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "github.com/incusexec/incusexec/examples/ism/server")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("build the server: %v: %s", err, b)
	}
	return out, nil
}
