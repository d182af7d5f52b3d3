package incusop

import (
	"sync"

	incus "github.com/lxc/incus/v6/client"
	"github.com/lxc/incus/v6/shared/api"
)

// Shared returns c made safe for starting operations from many goroutines
// at once; a client Shared already returned is returned as it is.
//
// The v6 client (v6.23.0 and later) is not: every call that starts an
// operation reads the client's skipEvents field without a lock, while the
// event connection that the same call opens writes it under one, so two
// operations started at once on one client race (the race detector reports
// it). Clients made with SkipGetEvents race elsewhere: their operations wait
// through GetOperationWait, which writes the shared HTTP transport's
// ResponseHeaderTimeout.
//
// The returned client starts each operation on a copy of c (same connection
// and project, made with UseProject) that no other goroutine is using; the
// copy goes back to a free list as soon as the call that starts the
// operation returns, so copies, and their event connections, are reused.
// An operation keeps using its copy's event connection while it is awaited,
// which the client guards with its own locks. Every call that starts no
// operation goes to c unchanged.
//
// Only the calls that start operations listed here are redirected; the
// others (rarer: backups, bucket and volume migrations) still run on c.
func Shared(c incus.InstanceServer) incus.InstanceServer {
	if s, ok := c.(*shared); ok {
		return s
	}
	return &shared{InstanceServer: c}
}

type shared struct {
	incus.InstanceServer
	mu    sync.Mutex
	free  []incus.InstanceServer
	every []incus.InstanceServer
}

// take returns a copy of the client for the caller's use alone.
func (s *shared) take() incus.InstanceServer {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.free); n > 0 {
		c := s.free[n-1]
		s.free = s.free[:n-1]
		return c
	}
	project := ""
	if info, err := s.InstanceServer.GetConnectionInfo(); err == nil {
		project = info.Project
	}
	c := s.InstanceServer.UseProject(project)
	s.every = append(s.every, c)
	return c
}

func (s *shared) put(c incus.InstanceServer) {
	s.mu.Lock()
	s.free = append(s.free, c)
	s.mu.Unlock()
}

// Disconnect closes the event connections of every copy, then c's.
func (s *shared) Disconnect() {
	s.mu.Lock()
	every := s.every
	s.every, s.free = nil, nil
	s.mu.Unlock()
	for _, c := range every {
		c.Disconnect()
	}
	s.InstanceServer.Disconnect()
}

func (s *shared) CreateInstance(req api.InstancesPost) (incus.Operation, error) {
	c := s.take()
	defer s.put(c)
	return c.CreateInstance(req)
}

func (s *shared) UpdateInstance(name string, put api.InstancePut, etag string) (incus.Operation, error) {
	c := s.take()
	defer s.put(c)
	return c.UpdateInstance(name, put, etag)
}

func (s *shared) RenameInstance(name string, post api.InstancePost) (incus.Operation, error) {
	c := s.take()
	defer s.put(c)
	return c.RenameInstance(name, post)
}

func (s *shared) DeleteInstance(name string) (incus.Operation, error) {
	c := s.take()
	defer s.put(c)
	return c.DeleteInstance(name)
}

func (s *shared) UpdateInstanceState(name string, state api.InstanceStatePut, etag string) (incus.Operation, error) {
	c := s.take()
	defer s.put(c)
	return c.UpdateInstanceState(name, state, etag)
}

func (s *shared) RebuildInstance(name string, req api.InstanceRebuildPost) (incus.Operation, error) {
	c := s.take()
	defer s.put(c)
	return c.RebuildInstance(name, req)
}

// ExecInstance holds its copy until the command's end: the client waits for
// the operation inside this call.
func (s *shared) ExecInstance(name string, req api.InstanceExecPost, args *incus.InstanceExecArgs) (incus.Operation, error) {
	c := s.take()
	defer s.put(c)
	return c.ExecInstance(name, req, args)
}

func (s *shared) ConsoleInstance(name string, req api.InstanceConsolePost, args *incus.InstanceConsoleArgs) (incus.Operation, error) {
	c := s.take()
	defer s.put(c)
	return c.ConsoleInstance(name, req, args)
}

func (s *shared) CopyInstance(source incus.InstanceServer, inst api.Instance, args *incus.InstanceCopyArgs) (incus.RemoteOperation, error) {
	c := s.take()
	defer s.put(c)
	if source == incus.InstanceServer(s) {
		source = c
	}
	return c.CopyInstance(source, inst, args)
}

func (s *shared) CreateInstanceSnapshot(name string, req api.InstanceSnapshotsPost) (incus.Operation, error) {
	c := s.take()
	defer s.put(c)
	return c.CreateInstanceSnapshot(name, req)
}

func (s *shared) RenameInstanceSnapshot(name, snap string, post api.InstanceSnapshotPost) (incus.Operation, error) {
	c := s.take()
	defer s.put(c)
	return c.RenameInstanceSnapshot(name, snap, post)
}

func (s *shared) DeleteInstanceSnapshot(name, snap string) (incus.Operation, error) {
	c := s.take()
	defer s.put(c)
	return c.DeleteInstanceSnapshot(name, snap)
}

func (s *shared) UpdateInstanceSnapshot(name, snap string, put api.InstanceSnapshotPut, etag string) (incus.Operation, error) {
	c := s.take()
	defer s.put(c)
	return c.UpdateInstanceSnapshot(name, snap, put, etag)
}

func (s *shared) CreateImage(req api.ImagesPost, args *incus.ImageCreateArgs) (incus.Operation, error) {
	c := s.take()
	defer s.put(c)
	return c.CreateImage(req, args)
}

func (s *shared) DeleteImage(fingerprint string) (incus.Operation, error) {
	c := s.take()
	defer s.put(c)
	return c.DeleteImage(fingerprint)
}

func (s *shared) RefreshImage(fingerprint string) (incus.Operation, error) {
	c := s.take()
	defer s.put(c)
	return c.RefreshImage(fingerprint)
}

func (s *shared) UpdateCluster(put api.ClusterPut, etag string) (incus.Operation, error) {
	c := s.take()
	defer s.put(c)
	return c.UpdateCluster(put, etag)
}

func (s *shared) CreateClusterMember(req api.ClusterMembersPost) (incus.Operation, error) {
	c := s.take()
	defer s.put(c)
	return c.CreateClusterMember(req)
}

func (s *shared) UpdateClusterMemberState(name string, req api.ClusterMemberStatePost) (incus.Operation, error) {
	c := s.take()
	defer s.put(c)
	return c.UpdateClusterMemberState(name, req)
}

func (s *shared) RawOperation(method, path string, data any, etag string) (incus.Operation, string, error) {
	c := s.take()
	defer s.put(c)
	return c.RawOperation(method, path, data, etag)
}

// GetEvents opens the listener on a copy of its own (see Events), so that
// the shared client's state is never written.
func (s *shared) GetEvents() (*incus.EventListener, error) {
	return Events(s.InstanceServer)
}
