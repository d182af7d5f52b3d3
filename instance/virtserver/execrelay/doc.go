// Package execrelay runs commands for other processes in this one: a
// process that holds a connection to the daemon (an autopkgtest virt
// server) serves a Unix socket, and a small caller (the execute command
// autopkgtest runs for every testbed command) connects, hands over its
// stdin, stdout and stderr as file descriptors (SCM_RIGHTS) with the
// command, and exits with the status the relay answers. The command runs on
// the relay's connection and writes straight into the caller's
// descriptors, so the caller opens no connection and builds no client of
// its own: it is a process start, a connect and a message. The package
// imports nothing beyond the standard library and executor's error
// vocabulary, so that a caller built on it (without cgo) starts in a few
// milliseconds.
//
// A caller that goes away (killed, or ending its side of the connection
// when its context ends, as Execute does on a signal) cancels its command
// through the RunFunc's context, and Close cancels whatever still runs.
// The socket is in a directory of its own, mode 0700, and the relay serves
// only processes of its own user (SO_PEERCRED).
//
// The wire format: the caller sends a 4-byte big-endian length and a JSON
// object {"name": instance, "argv": [...]}, its first bytes carrying the
// three descriptors; the relay answers "STATUS\n" once the command has ended
// and it has closed its copies of the descriptors.
package execrelay
