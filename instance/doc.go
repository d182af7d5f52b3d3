// Package instance is the lifecycle of one Incus instance, as a task runner
// needs it, over the Incus REST API (never the incus command):
//
//   - Manager.Create makes a container or VM from a local image alias or
//     fingerprint with profiles, config, devices, ephemeral or not, on a
//     cluster member the host names, on any member of a cluster group
//     ("@group"), or where the cluster's scheduler puts it
//     (Instance.Location tells which); it names it with a prefix and random digits,
//     taking another name when the server reports a conflict (no
//     check-then-create race), labels it with its owner, ID and creation
//     time (executor.OwnerKey, LabelID, LabelCreated), starts it and waits until it
//     is ready. It leaves either a ready instance or none. Create, Start
//     and Restart wait, within their context, while the server has the
//     instance's network out of service (incusd failed to start it when it
//     started, and tries again a minute later).
//   - Instance.WaitReady waits for what the host says "ready" means (Ready):
//     systemd up, an address on a NIC, the VM agent, a probe of its own. It
//     wakes on the instance's lifecycle events (one listener per Manager),
//     polls what events do not tell, stops waiting when the instance stops,
//     and on a timeout says what it saw last.
//   - Stop asks init to shut down and forces the instance off after a grace
//     period; Restart, Delete; all of them fine on an instance that is gone.
//   - Exec runs argv with environment, directory, user and group (a named
//     user is created on demand, as Debusine's _debusine), feeds stdin,
//     delivers stdout and stderr, and returns the exit status once all
//     output is in. A timeout or a cancelled context sends SIGTERM, then
//     SIGKILL. See "Exec output" below.
//   - Push, Pull and Mkdir move single files as streams, over SFTP; PushTar,
//     PullTar, PushTree and PullTree move whole trees with modes and owners.
//   - Stats reads CPU, memory and disk use from the state API.
//   - A Reaper (Manager.NewReaper) takes teardown off the caller's path for
//     a host process that keeps running: Reap hands an instance over and
//     returns at once, one worker deletes in the background, Drain and
//     Close wait. What a dying process leaves, GC deletes.
//   - Manager.GC deletes the owner's instances (optionally only old ones)
//     that a crashed host left behind, and reports every failure. On a
//     cluster with a member down it deletes the rest and reports that
//     member and its instances (ErrUnavailable); Incus then lists them with
//     status Error and no configuration, so nobody can tell whose they are.
//
// # Exec output
//
// incusd can lose the end of a command's output when it streams it over
// websockets: it reads the command's pipes with a one-second poll() and
// treats "nothing came and the command has exited" as end of file, so a
// command silent for about a second that then writes and exits can lose
// what it wrote, on a loaded host (internal/linux/poll.go, every Incus
// release). Exec therefore records output by default: incusd writes stdout
// and stderr to files on the instance's volume (record-output mode, no
// pipe, no poll), Exec copies them to the writers as they grow, by HTTP
// Range requests (after 0.1 s, then at most every second), reads them to
// their end once the command has exited, and deletes them in every
// outcome (Config.KeepExecOutputUpTo leaves small ones to go with the
// instance); GC removes files that a host killed mid-exec left on the
// instances it keeps. Every byte reaches the writers, in order per stream.
// A recorded command runs under /bin/sh, which writes its pid and execs
// the command (signals go to that pid through a second exec); an instance
// without /bin/sh gets the websocket path.
//
// An instance that shares a directory with this host (OutputDir, a disk
// device; UseOutputDir) gets its commands' output there instead: the
// wrapper redirects stdout and stderr into two files of the directory,
// which Exec follows and reads on this host and then removes. They are
// regular files as the recorded ones are, so nothing is lost, and no
// request is made for them: back to back, `true` takes about half as long
// (BenchmarkExecPaths). It takes a server on this host and a container.
//
// Stdin does not force the websocket path: the command reads it from a
// FIFO in /tmp that a second exec fills from a websocket (input is not
// subject to the race), while output stays recorded. When Stdin is set,
// the command starts once the feeder has connected, and a Stdin that never
// ends costs two seconds after the command ends before the feeder is
// killed. Without a writable /tmp or mkfifo, Exec falls back to the
// websocket path.
//
// executor.Cmd.Stream opts into the websocket path: output arrives as it is
// written, which interactive use (a shell, a progress bar, a prompt) wants,
// at the price of the race above. Recorded output is followed live but up
// to a second late, and the output of an ephemeral instance that stops
// itself (poweroff) can vanish with it before Exec reads the end: run such
// a command with Stream, or without Ephemeral.
//
// The Incus client methods the package calls are the Client interface: the
// client from github.com/lxc/incus/v6/client satisfies it, and a fake needs
// only those methods. The types it exchanges are package executor's
// (executor.Cmd, FileOptions, FileInfo, User, Stats): one definition for
// this package, the executor backends and the hosts. Errors wrap the
// sentinels ErrNotFound, ErrNotRunning, ErrAlreadyExists, ErrTimeout,
// ErrExec, ErrInvalid, ErrUser and ErrUnavailable (and the Incus status
// error behind them) for errors.Is; all but ErrExec and ErrUser are also
// the executor sentinels of the same meaning (ErrUnavailable is
// executor.ErrUnavailable). Every blocking method takes a context first;
// operations the context abandons are cancelled on the server where Incus
// allows it.
package instance
