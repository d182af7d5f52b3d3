// Package testimage holds what incusexec's own tests, benchmarks and demo
// need beyond the public [imagetest] package: the busybox system as a
// unified Incus image (for tests that bypass imagebuild), and the Debian
// build variant (build-essential and a normal user) that the autopkgtest
// virt server's tests use. The rest forwards to imagetest; new code uses
// imagetest directly.
//
// [imagetest]: https://pkg.go.dev/github.com/incusexec/incusexec/imagebuild/imagetest
package testimage
