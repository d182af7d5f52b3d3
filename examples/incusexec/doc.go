// Command incusexec is the reference command line of the incusexec library:
// a thin layer of flags, configuration and output over the executor,
// imagebuild, netbridge, instance and mount packages, and the quickest way
// to see them work.
//
//	go run ./examples/incusexec demo                 # the whole library at work, then clean up
//	go run ./examples/incusexec demo --backend fake  # the same flow without Incus
//
// Typical use on a host with Incus:
//
//	incusexec setup                                  # storage pool, NAT-less bridge incusexec-br, profile incusexec
//	incusexec image import rootfs.tar.zst --alias artifact/bookworm
//	incusexec run --image artifact/bookworm --profile incusexec --ready systemd \
//	    --push ./src:/srv/src --pull /srv/out:./out --user _debusine -- sh -c 'cd /srv/src && make'
//	incusexec gc --older-than 24h --networks
//
// # Commands
//
//	setup [--network N] [--profile P] [--subnet CIDR] [--nic-name IF] [--pool POOL] [--nat]
//	    Make sure of a storage pool (a dir pool is created when the daemon
//	    has none), a managed bridge (NAT off unless --nat) and a profile
//	    with the root disk and the NIC; print what changed.
//	image import TARBALL --alias A [--vm] [--mode split|unified]
//	        [--compression none|gzip|zstd] [--arch A] [--os O] [--release R]
//	        [--description D] [--profile P]... [--replace]
//	    Import a system tarball (.tar, .tar.gz, .tar.xz, .tar.zst; a qcow2
//	    disk with --vm) as image artifact/<ID> (A may be artifact/ID or ID),
//	    with a progress bar on a terminal; print the fingerprint and alias.
//	image rm ALIAS
//	    Remove the alias and its image (the image stays while used).
//	run --image A [--profile P]... [--vm] [--mount ALIAS=SRC[:ro]]...
//	        [--push SRC:DST]... [--pull SRC:DST]... [--user U] [--env K=V]...
//	        [--cwd D] [--timeout DUR] [--ready systemd|network|none] [--keep] -- CMD...
//	    One task end to end in an ephemeral instance: create, start, mount,
//	    create the user, push (owned by the user), run with stdout and
//	    stderr streamed (stdin too when it is not a terminal), pull, delete.
//	    Exits with the command's exit code. --keep leaves the instance
//	    (persistent) and prints its name on stderr.
//	launch --image A [--profile P]... [--name N] [--ephemeral] [--vm] [--ready R]
//	    Create and start an instance; print its name.
//	exec NAME [--user U] [--env K=V]... [--cwd D] [--timeout DUR] -- CMD...
//	    Run a command in an instance; exit with its code.
//	push NAME SRC DST [-r] [--uid N] [--gid N] [--mode M]
//	    Copy a host file (SRC - reads stdin) or, with -r, a directory in.
//	pull NAME SRC DST [-r]
//	    Copy a file (DST - writes stdout) or, with -r, a directory out.
//	mount NAME ALIAS SRC [--ro] [--shift]
//	    Mount the host directory SRC at /data/<hash of ALIAS>, counting a
//	    reference; print that path. Sources must lie under the config's
//	    allowed_roots; without any, the source named is allowed.
//	unmount NAME ALIAS
//	    Release one reference; the last one detaches the directory.
//	stop NAME [--timeout DUR]    stop gracefully, then by force
//	delete NAME                  force off and delete
//	list                         the owner's instances and their status
//	stats NAME                   resource usage as JSON
//	virt-args --image A [--vm] [--profile P]
//	    The arguments of autopkgtest-virt-incus for the image.
//	virt-server [-d] [--vm] IMAGE [-- incus launch arguments]
//	    The autopkgtest virtualisation server on stdin/stdout (also run as
//	    autopkgtest-virt-incusexec), with autopkgtest-virt-incus's
//	    arguments. Its execute command is the incusexec-virt-exec helper
//	    when it sits beside the binary (make install puts it there), else
//	    virt-exec --relay.
//	virt-exec [--relay=SOCKET] NAME -- CMD...
//	    Run CMD as root in the login environment in the instance: through
//	    the virt server's relay with --relay, else on a connection of its
//	    own. Exits with CMD's status (255 when it could not run it).
//	gc [--older-than DUR] [--networks]
//	    Delete the owner's instances (older than DUR); with --networks also
//	    its bridges, profiles and ACLs when nothing else uses them.
//	demo [--backend incus|fake] [--debian] [--pool P]
//	    Set up a pool when needed, a NAT-less bridge and a profile; build a
//	    busybox image from busybox-static (or, with --debian, import the
//	    debootstrapped Debian tarball); run three tasks in parallel in
//	    ephemeral instances (one as an unprivileged user, one failing with
//	    exit 3); share a host directory between two instances by alias with
//	    reference counting; print a summary and remove everything it created.
//	bench [--image TARBALL] [--pool P,...] [--runs N] [--concurrency C] [--quick]
//	    The benchmark suite of internal/bench: incusexec against the incus
//	    command line and the raw API, side by side (image import, start to
//	    ready, exec round trip, push/pull, teardown, task throughput, warm
//	    pool claim); prints the table with each ratio (incusexec / reference)
//	    and the target it should meet, e.g. split import ≤ 1.5x of `incus
//	    image import`, start to ready ≤ 0.75x of `incus launch` plus an exec
//	    loop, exec round trip ≤ 0.6x of `incus exec`, push/pull ≤ 1.0x of
//	    `incus file push/pull`, 20 tasks at concurrency 4 ≤ 0.33x of the same
//	    run one by one through the CLI, a warm pool claim ≤ 0.1x of a cold
//	    start.
//
// Global flags, accepted before or after the command: --config FILE,
// --socket PATH, --remote URL, --project P, --target MEMBER, --owner O
// (default incusexec; everything created carries user.incusexec.owner=O, and
// gc touches only that), --json, -v (log what the library does to stderr).
// `incusexec help config` prints an example configuration file: the Incus
// section of an ISM-style configuration (socket or remote with client
// certificate, project, target, network and profile specs, prefix, owner),
// either at the top level of the file or under executors: incus:.
//
// # Exit codes
//
// run and exec exit with the command's exit code; 124 when --timeout ran
// out; 125 when the executor failed (the reason on stderr); 130 when
// interrupted by SIGINT or SIGTERM; 2 for usage errors. An interrupted
// command cleans up what it created (instance, devices, partially imported
// image) before it exits, except what --keep asks to keep; a second signal
// kills at once.
package main
