// Package executortest is the conformance suite of executor.Executor, in the
// spirit of testing/fstest.TestFS: one set of checks that the Incus backend,
// the in-memory fake and any custom backend run, so that what passes here
// behaves the same for a host.
//
// A backend's test calls [Run] with a constructor:
//
//	func TestConformance(t *testing.T) {
//		executortest.Run(t, func(t *testing.T) executor.Executor {
//			return mybackend.New(...)
//		}, executortest.Options{})
//	}
//
// Each check is also a plain function returning an error ([Checks], [Test]),
// so that a test can assert that a deliberately broken backend fails them.
//
// The suite runs these commands, with these arguments, in the image; every
// backend's image must provide them (busybox and Debian do): true, false,
// sh -c 'exit N', echo ARGS, cat [FILE...], sleep SECONDS, pwd, env, id -u,
// id -g and touch FILE.
package executortest
