package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/incusexec/incusexec/executor/incus"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/instance/warmpool"
)

// `incusexec pool` keeps a warm pool on the server across runs, without a
// daemon of ours: `pool fill` creates ready instances and exits, leaving
// them labelled on the server; `pool run` claims one (a compare-and-swap
// on its configuration, so that two runs never get the same instance),
// runs the command, and deletes it; `pool drain` deletes the unclaimed
// ones. A host keeps the pool full by running `pool fill` when it likes
// (after each run, from a timer); a run that finds the pool empty launches
// a fresh instance instead, unless --no-cold.

// poolFlags are the flags every pool subcommand takes.
type poolFlags struct {
	name *string
	inf  instanceFlags
}

func (f *poolFlags) register(fs interface {
	String(name, value, usage string) *string
}) {
	f.name = fs.String("name", "", "pool `name` (letters, digits, hyphens; required)")
}

// open connects and opens the named manual pool; with an image it can
// create instances, without one it can only claim and delete.
func (f *poolFlags) open(ctx context.Context, a *app, size int) (*incus.Backend, *incus.Executor, *warmpool.Pool, error) {
	if *f.name == "" {
		return nil, nil, nil, usageErr("--name is required")
	}
	cfg, fc, err := a.executorConfig()
	if err != nil {
		return nil, nil, nil, err
	}
	ready := *f.inf.ready
	if ready == "" {
		ready = fc.Ready
	}
	nic := *f.inf.readyNIC
	if nic == "" {
		nic = fc.NICName
	}
	if cfg.Ready, err = parseReady(ready, nic); err != nil {
		return nil, nil, nil, usageErr("--ready: %v", err)
	}
	image := *f.inf.image
	if image == "" {
		image = anyImage
	}
	b, err := incus.NewBackend(ctx, cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	ex, err := b.Executor(incus.Image{Alias: image, VM: *f.inf.vm})
	if err != nil {
		b.Close()
		return nil, nil, nil, err
	}
	m, err := instance.New(b.Client(), instance.Config{Owner: cfg.Owner, Prefix: cfg.Prefix, Logger: a.log})
	if err != nil {
		b.Close()
		return nil, nil, nil, err
	}
	p, err := warmpool.New(warmpool.Config{
		Name: *f.name, Manager: m, Client: b.Client(), Size: max(size, 1), Manual: true, Logger: a.log,
		Spec: instance.Spec{
			Image: ex.Image(), VM: *f.inf.vm, Ephemeral: true, Target: cfg.Target,
			Profiles: append(b.Profiles(), f.inf.profiles...), Ready: cfg.Ready,
		},
	})
	if err != nil {
		m.Close()
		b.Close()
		return nil, nil, nil, usageErr("%v", err)
	}
	return b, ex, p, nil
}

func cmdPool(ctx context.Context, a *app, args []string) error {
	if len(args) == 0 {
		return usageErr("pool: want fill, run or drain")
	}
	switch args[0] {
	case "fill":
		return cmdPoolFill(ctx, a, args[1:])
	case "run":
		return cmdPoolRun(ctx, a, args[1:])
	case "drain":
		return cmdPoolDrain(ctx, a, args[1:])
	}
	return usageErr("pool %q: want fill, run or drain", args[0])
}

func cmdPoolFill(ctx context.Context, a *app, args []string) error {
	fs := a.flagSet("pool fill")
	var pf poolFlags
	pf.register(fs)
	pf.inf.register(fs)
	size := fs.Int("size", 1, "number of ready, unclaimed `instances` to have")
	pos, _, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErr("unexpected arguments %q", pos)
	}
	if *pf.inf.image == "" {
		return usageErr("--image is required")
	}
	if *size < 1 {
		return usageErr("--size %d: want at least 1", *size)
	}
	b, _, p, err := pf.open(ctx, a, *size)
	if err != nil {
		return err
	}
	defer b.Close()
	// The instances stay for later runs; a failed or cancelled creation
	// deletes its own.
	defer p.Detach()
	return p.Fill(ctx)
}

func cmdPoolRun(ctx context.Context, a *app, args []string) error {
	fs := a.flagSet("pool run")
	var pf poolFlags
	pf.register(fs)
	pf.inf.register(fs)
	var exf execFlags
	exf.register(fs)
	noCold := fs.Bool("no-cold", false, "fail (exit 125) when the pool is empty instead of launching a fresh instance")
	pos, argv, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(argv) == 0 {
		argv, pos = pos, nil
	}
	if len(pos) > 0 {
		return usageErr("unexpected arguments %q before --", pos)
	}
	if len(argv) == 0 {
		return usageErr("no command given (put it after --)")
	}
	if _, err := exf.environment(); err != nil {
		return err
	}
	if *pf.inf.image == "" && !*noCold {
		return usageErr("--image is required (or --no-cold)")
	}
	b, ex, p, err := pf.open(ctx, a, 1)
	if err != nil {
		return err
	}
	defer b.Close()
	defer p.Detach()
	var in executor.Instance
	claimed, err := p.Claim(ctx)
	switch {
	case err == nil:
		a.log.Info("claimed from the warm pool", "pool", *pf.name, "instance", claimed.Name())
		if in, err = ex.Instance(ctx, claimed.Name()); err != nil {
			cctx, cancel := cleanupCtx(ctx)
			defer cancel()
			return errors.Join(err, claimed.Delete(cctx))
		}
	case errors.Is(err, warmpool.ErrEmpty) && !*noCold:
		a.log.Info("warm pool empty: launching a fresh instance", "pool", *pf.name)
		pf.inf.ephemeral = true
		var cb *incus.Backend
		if cb, in, err = pf.inf.create(ctx, a, "incusexec-run", ""); err != nil {
			return err
		}
		defer cb.Close()
	default:
		return fmt.Errorf("pool run: %w", err)
	}
	// The process exits after the run: delete before, leaving nothing.
	defer func() {
		cctx, cancel := cleanupCtx(ctx)
		defer cancel()
		if derr := in.Delete(cctx); derr != nil {
			fmt.Fprintf(a.stderr, "incusexec pool run: delete %s: %v\n", in.Name(), derr)
		}
	}()
	if _, err := exf.prepareUser(ctx, in); err != nil {
		return err
	}
	return exf.exec(ctx, a, in, argv)
}

func cmdPoolDrain(ctx context.Context, a *app, args []string) error {
	fs := a.flagSet("pool drain")
	var pf poolFlags
	pf.register(fs)
	pf.inf.register(fs)
	pos, _, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErr("unexpected arguments %q", pos)
	}
	b, _, p, err := pf.open(ctx, a, 1)
	if err != nil {
		return err
	}
	defer b.Close()
	// Claims of runs that died are reclaimed, then every unclaimed
	// instance whose filler has exited is deleted.
	_, gcErr := p.GC(ctx)
	return errors.Join(gcErr, p.Close(ctx))
}

// anyImage is the image of a pool opened without --image (drain): the
// warm pool's spec needs one, though it creates no instance then.
const anyImage = "incusexec/any"
