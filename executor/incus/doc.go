// Package incus is the Incus backend of package executor: a [Backend] is
// one connection to an Incus daemon or cluster (local socket, or HTTPS with
// client certificates) and the parts built on it (instance, mount/incus,
// imagebuild, netbridge), shared by the [Executor]s of any number of
// images. [NewBackend] assembles them from one [Config]; [Backend.Executor]
// binds an image (an artifact tarball imported as artifact/<ID>, or an
// existing alias); [Backend.Instance] reaches an existing instance by name,
// whatever its image.
//
// Hosts that need only the connection (to import an image, say) get it
// from [Connect], made as the backend makes its own: it waits for a
// restarting daemon (DefaultReconnect) and is safe for operations started
// from many goroutines. [EnsurePool] and [RemovePool] make sure of the
// storage pool a fresh daemon lacks.
//
// The Incus client package is imported here as incusclient; hosts that
// import both usually do the same.
package incus
