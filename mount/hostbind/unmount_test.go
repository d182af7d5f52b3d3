package hostbind_test

import "golang.org/x/sys/unix"

func unmountForTest(p string) error { return unix.Unmount(p, 0) }
