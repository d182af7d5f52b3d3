package instance

import (
	"io"
	"net"

	incus "github.com/lxc/incus/v6/client"
	"github.com/lxc/incus/v6/shared/api"
)

// Client is the part of the Incus client (incus.InstanceServer) that this
// package calls. The real client satisfies it; a fake needs only these.
//
// GetEvents may fail (a fake can return an error): events only make waits
// return sooner, and everything falls back to polling without them.
type Client interface {
	CreateInstance(req api.InstancesPost) (incus.Operation, error)
	GetInstance(name string) (*api.Instance, string, error)
	GetInstancesWithFilter(t api.InstanceType, filters []string) ([]api.Instance, error)
	GetInstanceState(name string) (*api.InstanceState, string, error)
	UpdateInstanceState(name string, state api.InstanceStatePut, etag string) (incus.Operation, error)
	DeleteInstance(name string) (incus.Operation, error)
	ExecInstance(name string, req api.InstanceExecPost, args *incus.InstanceExecArgs) (incus.Operation, error)
	GetInstanceFile(name, path string) (io.ReadCloser, *incus.InstanceFileResponse, error)
	CreateInstanceFile(name, path string, args incus.InstanceFileArgs) error
	GetInstanceFileSFTPConn(name string) (net.Conn, error)
	GetEvents() (*incus.EventListener, error)
}

// targeter is how Create places an instance on a cluster member; the real
// client has it, narrow fakes need not.
type targeter interface {
	UseTarget(name string) incus.InstanceServer
}

// resourcer reports the host's CPUs for Stats of instances without
// limits.cpu.
type resourcer interface {
	GetServerResources() (*api.Resources, error)
}
