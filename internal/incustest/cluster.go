package incustest

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/incusexec/incusexec/internal/incusop"
	incus "github.com/lxc/incus/v6/client"
	"github.com/lxc/incus/v6/shared/api"
)

// ClusterOptions configures a private cluster.
type ClusterOptions struct {
	// Members is the number of members, 3 when zero (at most 8).
	Members int
	// Pool is the storage driver of the cluster's pool: "dir", or "btrfs"
	// for a loop file per member. When empty, INCUSEXEC_TEST_POOL decides,
	// else "dir" (quicker to set up three times).
	Pool string
	// PoolSize is the size of each member's btrfs loop file; 2GiB when empty.
	PoolSize string
	// NoNetwork leaves the cluster without a bridge and the default profile
	// without a NIC.
	NoNetwork bool
	// OfflineThreshold sets cluster.offline_threshold, after which the
	// cluster considers a silent member offline (Incus: more than 10s,
	// default 20s).
	OfflineThreshold time.Duration
	// Logger receives the harness's progress; discarded when nil.
	Logger *slog.Logger
}

// Cluster is a private Incus cluster on this machine: members named
// member1, member2, ... each run their own incusd with its own INCUS_DIR in
// network and mount namespaces of their own, as if on separate hosts, and
// reach each other at 127.0.0.2, 127.0.0.3, ... port 8443. The cluster has a
// storage pool and a bridge on every member and a default profile wiring
// both, and trusts a client certificate for HTTPS access.
type Cluster struct {
	// Dir holds the members' INCUS_DIRs.
	Dir string
	// Members in join order; Members[0] bootstrapped the cluster.
	Members []*Member
	// Pool and PoolDriver name the storage pool the default profile uses.
	Pool, PoolDriver string
	// Network is the managed bridge of the default profile ("" with
	// NoNetwork), Gateway its IPv4 address with prefix length on every
	// member (NAT off, IPv6 off). Each member's bridge lives in that
	// member's network namespace; Member.DialContext reaches it.
	Network string
	Gateway netip.Prefix
	// Client is an HTTPS client of Members[0] authenticated with ClientCert,
	// as a remote host would connect.
	Client incus.InstanceServer
	// ServerCert is the cluster's certificate (PEM), which HTTPS clients
	// pin; ClientCert and ClientKey (PEM) are trusted by the cluster.
	ServerCert, ClientCert, ClientKey string

	log      *slog.Logger
	mu       sync.Mutex // serialises StopMember, StartMember and Stop
	formed   bool
	stopped  bool
	busybox  sync.Once
	busyFP   string
	busyErr  error
	relaysMu sync.Mutex
	relays   []*relay
}

// Member is one daemon of a Cluster.
type Member struct {
	// Name is the member's server name ("member1", ...).
	Name string
	// Address is the member's cluster address, as the members see it.
	Address string
	// HostAddress is where this process reaches the member's API over
	// HTTPS: Address itself unless another cluster on the machine holds it.
	HostAddress string
	// Dir is the member's INCUS_DIR, Socket its unix socket.
	Dir, Socket string
	// Client is connected to Socket; nil while the member is stopped.
	// StopMember and StartMember replace it: do not use it concurrently
	// with them.
	Client incus.InstanceServer

	machine *machine
	daemon  *Daemon
}

// Running reports whether the member's daemon runs (see Cluster.StopMember).
func (m *Member) Running() bool { return m.daemon != nil }

// DialContext connects from the member's network namespace, where its
// bridge and the instances it hosts are reachable.
func (m *Member) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return m.machine.thread.dial(ctx, network, address)
}

// Command prepares a command that runs in the member's network and mount
// namespaces, as a shell on that member's host would: a mount it makes
// (say, a tmpfs over a directory) is seen by this member alone.
func (m *Member) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	argv := append([]string{"--target", strconv.Itoa(m.machine.holder.Process.Pid), "--net", "--mount", "--", name}, args...)
	return exec.CommandContext(ctx, "nsenter", argv...)
}

// Interfaces lists the network interfaces of the member's namespace.
func (m *Member) Interfaces() ([]net.Interface, error) {
	return m.machine.thread.interfaces()
}

// StartCluster starts a private cluster: the first member bootstraps it,
// the others join with join tokens; then the storage pool and the bridge
// are defined on each member and created cluster-wide. The caller must call
// Stop.
func StartCluster(ctx context.Context, opts ClusterOptions) (c *Cluster, err error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("%w: incusd needs root (running as uid %d)", ErrUnavailable, os.Geteuid())
	}
	if _, err := os.Stat(IncusdPath); err != nil {
		return nil, fmt.Errorf("%w: %s not found (run `make deps` as root)", ErrUnavailable, IncusdPath)
	}
	for _, tool := range []string{"unshare", "nsenter", "mount", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%w: %s not found", ErrUnavailable, tool)
		}
	}
	n := opts.Members
	if n == 0 {
		n = 3
	}
	if n < 1 || n > 8 {
		return nil, fmt.Errorf("incustest: a cluster of %d members (want 1 to 8)", n)
	}
	driver := opts.Pool
	if driver == "" {
		driver = os.Getenv("INCUSEXEC_TEST_POOL")
	}
	if driver == "" {
		driver = "dir"
	}
	if driver != "dir" && driver != "btrfs" {
		return nil, fmt.Errorf("incustest: unsupported pool driver %q (want btrfs or dir)", driver)
	}
	if opts.OfflineThreshold != 0 && opts.OfflineThreshold <= 10*time.Second {
		return nil, fmt.Errorf("incustest: offline threshold %s (Incus wants more than 10s)", opts.OfflineThreshold)
	}
	becomeSubreaper()
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir, err := os.MkdirTemp("", fmt.Sprintf("incustest-cluster-%d-", os.Getpid()))
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		return nil, errors.Join(err, os.Remove(dir))
	}
	c = &Cluster{Dir: dir, log: log}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Stop(context.WithoutCancel(ctx)))
			c = nil
		}
	}()
	started := time.Now()

	hostListeners, err := listenHost(n)
	if err != nil {
		return c, err
	}
	for i := range n {
		m := &Member{
			Name:        fmt.Sprintf("member%d", i+1),
			Address:     fmt.Sprintf("127.0.0.%d:8443", i+2),
			HostAddress: hostListeners[i].Addr().String(),
			Dir:         filepath.Join(dir, fmt.Sprintf("member%d", i+1)),
		}
		m.Socket = filepath.Join(m.Dir, "unix.socket")
		c.Members = append(c.Members, m)
		err := os.Mkdir(m.Dir, 0o711)
		if err == nil {
			m.machine, err = startMachine(ctx, m.Dir)
		}
		if err != nil {
			for _, l := range hostListeners[i:] {
				l.Close()
			}
			return c, err
		}
		c.addRelay(startRelay(hostListeners[i], c.dialer(m)))
	}
	for _, m := range c.Members {
		for _, peer := range c.Members {
			if peer == m {
				continue
			}
			l, err := m.machine.thread.listen(peer.Address)
			if err != nil {
				return c, fmt.Errorf("relay to %s inside %s's namespace: %w", peer.Name, m.Name, err)
			}
			c.addRelay(startRelay(l, c.dialer(peer)))
		}
	}

	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, m := range c.Members {
		wg.Go(func() { errs[i] = c.startDaemon(ctx, m) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return c, err
	}
	log.Info("cluster daemons started", "dir", dir, "took", time.Since(started))

	if err := c.form(ctx, opts); err != nil {
		return c, err
	}
	c.formed = true
	log.Info("cluster formed", "members", n, "took", time.Since(started))

	if err := c.setupPool(driver, opts.PoolSize); err != nil {
		return c, err
	}
	if !opts.NoNetwork {
		if err := c.setupNetwork(ctx); err != nil {
			return c, err
		}
	}
	if err := c.trustClient(); err != nil {
		return c, err
	}
	log.Info("cluster ready", "took", time.Since(started))
	return c, nil
}

func (c *Cluster) addRelay(r *relay) {
	c.relaysMu.Lock()
	c.relays = append(c.relays, r)
	c.relaysMu.Unlock()
}

// dialer connects to m's daemon from inside m's namespace.
func (c *Cluster) dialer(m *Member) func() (net.Conn, error) {
	return func() (net.Conn, error) {
		return m.machine.thread.dial(context.Background(), "tcp", m.Address)
	}
}

// startDaemon runs incusd in m's namespaces and waits until it answers.
func (c *Cluster) startDaemon(ctx context.Context, m *Member) error {
	logFile, err := os.OpenFile(filepath.Join(m.Dir, "incusd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	d := &Daemon{Dir: m.Dir, Socket: m.Socket, exited: make(chan struct{}), log: c.log}
	d.cmd = exec.Command("nsenter", "--target", strconv.Itoa(m.machine.holder.Process.Pid), "--net", "--mount", "--",
		IncusdPath, "--group", "root")
	d.cmd.Env = append(os.Environ(), "INCUS_DIR="+m.Dir)
	d.cmd.Stdout, d.cmd.Stderr = logFile, logFile
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		return fmt.Errorf("start incusd of %s: %w", m.Name, err)
	}
	go func() { _ = d.cmd.Wait(); close(d.exited) }()
	if err := d.waitReady(ctx, 90*time.Second); err != nil {
		_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		<-d.exited
		return fmt.Errorf("%s: %w", m.Name, err)
	}
	m.daemon, m.Client = d, d.Client
	c.log.Info("member daemon started", "member", m.Name, "pid", d.cmd.Process.Pid)
	return nil
}

// form bootstraps the cluster on the first member and joins the others.
func (c *Cluster) form(ctx context.Context, opts ClusterOptions) error {
	first := c.Members[0]
	if err := updateServerConfig(first.Client, map[string]string{"core.https_address": first.Address}); err != nil {
		return fmt.Errorf("listen on %s: %w", first.Address, err)
	}
	op, err := first.Client.UpdateCluster(api.ClusterPut{Cluster: api.Cluster{ServerName: first.Name, Enabled: true}}, "")
	if err == nil {
		err = op.WaitContext(ctx)
	}
	if err != nil {
		return fmt.Errorf("bootstrap cluster on %s: %w", first.Name, err)
	}
	srv, _, err := first.Client.GetServer()
	if err != nil {
		return err
	}
	c.ServerCert = srv.Environment.Certificate
	if opts.OfflineThreshold != 0 {
		secs := strconv.Itoa(int(opts.OfflineThreshold.Round(time.Second) / time.Second))
		if err := updateServerConfig(first.Client, map[string]string{"cluster.offline_threshold": secs}); err != nil {
			return fmt.Errorf("set offline threshold: %w", err)
		}
	}
	for _, m := range c.Members[1:] {
		op, err := first.Client.CreateClusterMember(api.ClusterMembersPost{ServerName: m.Name})
		if err != nil {
			return fmt.Errorf("join token for %s: %w", m.Name, err)
		}
		opAPI := op.Get()
		token, err := opAPI.ToClusterJoinToken()
		if err != nil {
			return fmt.Errorf("join token for %s: %w", m.Name, err)
		}
		op, err = m.Client.UpdateCluster(api.ClusterPut{
			Cluster:            api.Cluster{ServerName: m.Name, Enabled: true},
			ClusterAddress:     first.Address,
			ClusterCertificate: c.ServerCert,
			ServerAddress:      m.Address,
			ClusterToken:       token.String(),
		}, "")
		if err == nil {
			err = op.WaitContext(ctx)
		}
		if err != nil {
			return fmt.Errorf("%s joins the cluster: %w", m.Name, err)
		}
	}
	for _, m := range c.Members {
		if err := c.waitUsable(ctx, m); err != nil {
			return err
		}
	}
	return nil
}

// waitUsable waits until the cluster reports m online and every other
// running member forwards requests to it: a member reports a peer online
// before it has reconnected to the peer's events, and until then it refuses
// to forward requests there ("Server isn't ready yet").
func (c *Cluster) waitUsable(ctx context.Context, m *Member) error {
	if err := c.WaitMemberStatus(ctx, m.Name, "Online"); err != nil {
		return err
	}
	for _, o := range c.Members {
		if o == m || o.Client == nil {
			continue
		}
		for {
			srv, _, err := o.Client.UseTarget(m.Name).GetServer()
			if err == nil && srv.Environment.ServerName == m.Name {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s does not reach %s (last error: %v): %w", o.Name, m.Name, err, ctx.Err())
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return nil
}

func updateServerConfig(client incus.InstanceServer, cfg map[string]string) error {
	srv, etag, err := client.GetServer()
	if err != nil {
		return err
	}
	put := srv.Writable()
	if put.Config == nil {
		put.Config = map[string]string{}
	}
	for k, v := range cfg {
		put.Config[k] = v
	}
	return client.UpdateServer(put, etag)
}

// WaitMemberStatus waits until the cluster (as seen by a running member)
// reports member name with status ("Online", "Offline", "Evacuated").
func (c *Cluster) WaitMemberStatus(ctx context.Context, name, status string) error {
	var last string
	for {
		if client := c.runningClient(); client != nil {
			m, _, err := client.GetClusterMember(name)
			switch {
			case err != nil:
				last = err.Error()
			case m.Status == status:
				return nil
			default:
				last = m.Status + ": " + m.Message
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster member %s is not %s (last: %s): %w", name, status, last, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// runningClient returns the unix client of the first running member.
func (c *Cluster) runningClient() incus.InstanceServer {
	for _, m := range c.Members {
		if m.Client != nil {
			return m.Client
		}
	}
	return nil
}

// setupPool defines the pool on every member (pending) and then creates it
// cluster-wide, as `incus storage create --target` does.
func (c *Cluster) setupPool(driver, size string) error {
	client := c.Members[0].Client
	memberCfg := map[string]string{}
	if driver == "btrfs" {
		if size == "" {
			size = "2GiB"
		}
		memberCfg["size"] = size
	}
	c.Pool, c.PoolDriver = "test", driver
	for _, m := range c.Members {
		err := client.UseTarget(m.Name).CreateStoragePool(api.StoragePoolsPost{
			Name: c.Pool, Driver: driver, StoragePoolPut: api.StoragePoolPut{Config: memberCfg},
		})
		if err != nil {
			return fmt.Errorf("define %s storage pool on %s: %w", driver, m.Name, err)
		}
	}
	if err := client.CreateStoragePool(api.StoragePoolsPost{Name: c.Pool, Driver: driver}); err != nil {
		return fmt.Errorf("create %s storage pool: %w", driver, err)
	}
	return c.updateDefaultProfile(func(p *api.ProfilePut) {
		p.Devices["root"] = map[string]string{"type": "disk", "path": "/", "pool": c.Pool}
	})
}

func (c *Cluster) setupNetwork(ctx context.Context) error {
	// Every member's bridge is in its own namespace; reserving a subnet
	// free on the host keeps traffic to it unambiguous all the same.
	name, gw, release, err := reserveBridge(ctx)
	if err != nil {
		return err
	}
	defer release()
	client := c.Members[0].Client
	for _, m := range c.Members {
		if err := client.UseTarget(m.Name).CreateNetwork(api.NetworksPost{Name: name, Type: "bridge"}); err != nil {
			return fmt.Errorf("define bridge %s on %s: %w", name, m.Name, err)
		}
	}
	post := api.NetworksPost{
		Name: name, Type: "bridge",
		NetworkPut: api.NetworkPut{
			Description: "incustest cluster bridge",
			Config: map[string]string{
				"ipv4.address": gw.String(),
				"ipv4.nat":     "false",
				"ipv6.address": "none",
			},
		},
	}
	// The creation lists every link on each member's host and fails when
	// one vanishes meanwhile (see linkRaceTries): retry. A failed attempt
	// leaves the network pending, which the next attempt instantiates.
	for attempt := 1; ; attempt++ {
		err = client.CreateNetwork(post)
		if err == nil || attempt == linkRaceTries || ctx.Err() != nil {
			break
		}
		time.Sleep(linkRacePause)
	}
	if err != nil {
		return fmt.Errorf("create bridge %s (%s): %w", name, gw, err)
	}
	c.Network, c.Gateway = name, gw
	return c.updateDefaultProfile(func(p *api.ProfilePut) {
		p.Devices["eth0"] = map[string]string{"type": "nic", "network": name, "name": "eth0"}
	})
}

func (c *Cluster) updateDefaultProfile(edit func(*api.ProfilePut)) error {
	return (&Daemon{Client: c.runningClient()}).updateDefaultProfile(edit)
}

// trustClient adds a fresh client certificate to the cluster's trust store
// and connects Client with it.
func (c *Cluster) trustClient() error {
	certPEM, keyPEM, err := NewClientCertificate("incustest")
	if err != nil {
		return err
	}
	block, _ := pem.Decode([]byte(certPEM))
	err = c.Members[0].Client.CreateCertificate(api.CertificatesPost{CertificatePut: api.CertificatePut{
		Name: "incustest", Type: api.CertificateTypeClient, Certificate: base64.StdEncoding.EncodeToString(block.Bytes),
	}})
	if err != nil {
		return fmt.Errorf("trust the test client certificate: %w", err)
	}
	c.ClientCert, c.ClientKey = certPEM, keyPEM
	c.Client, err = c.ConnectHTTPS(0, certPEM, keyPEM)
	return err
}

// ConnectHTTPS connects to member i over HTTPS, pinning the cluster
// certificate and presenting the client certificate certPEM/keyPEM (none
// when empty).
func (c *Cluster) ConnectHTTPS(i int, certPEM, keyPEM string) (incus.InstanceServer, error) {
	if i < 0 || i >= len(c.Members) {
		return nil, fmt.Errorf("incustest: no cluster member %d (have %d)", i, len(c.Members))
	}
	client, err := incus.ConnectIncus("https://"+c.Members[i].HostAddress, &incus.ConnectionArgs{
		TLSClientCert: certPEM,
		TLSClientKey:  keyPEM,
		TLSServerCert: c.ServerCert,
	})
	if err != nil {
		return nil, fmt.Errorf("connect to %s at %s: %w", c.Members[i].Name, c.Members[i].HostAddress, err)
	}
	return incusop.Shared(client), nil
}

// NewClientCertificate returns a self-signed TLS client certificate and its
// key, PEM encoded, named name.
func NewClientCertificate(name string) (certPEM, keyPEM string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return "", "", err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"incusexec tests"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", err
	}
	certPEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	keyPEM = string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	return certPEM, keyPEM, nil
}

// BusyboxImage imports the busybox image into the cluster once (later calls
// return the same fingerprint) under BusyboxAlias; every member can launch it.
func (c *Cluster) BusyboxImage(t testing.TB) string {
	t.Helper()
	c.busybox.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		c.busyFP, c.busyErr = c.ImportUnified(ctx, BusyboxAlias, nil)
	})
	if c.busyErr != nil {
		t.Fatalf("import busybox image into the cluster: %v", c.busyErr)
	}
	return c.busyFP
}

// ImportUnified imports a unified image tarball (the busybox one when data
// is nil) under alias through the first running member and returns its
// fingerprint.
func (c *Cluster) ImportUnified(ctx context.Context, alias string, data []byte) (string, error) {
	client := c.runningClient()
	if client == nil {
		return "", errors.New("incustest: no cluster member is running")
	}
	return (&Daemon{Client: client}).ImportUnified(ctx, alias, data)
}

func (c *Cluster) member(i int) (*Member, error) {
	if i < 0 || i >= len(c.Members) {
		return nil, fmt.Errorf("incustest: no cluster member %d (have %d)", i, len(c.Members))
	}
	return c.Members[i], nil
}

// StopMember stops the daemon of member i (0-based) as a crash or a
// service stop would: incusd ends (SIGTERM, its instances, bridge and
// dnsmasq keep running), its API and cluster address stop answering, and
// the other members mark it offline after the offline threshold (see
// WaitMemberStatus). StartMember brings it back.
func (c *Cluster) StopMember(ctx context.Context, i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, err := c.member(i)
	if err != nil || m.daemon == nil {
		return err
	}
	d := m.daemon
	m.daemon, m.Client = nil, nil
	d.Client.Disconnect()
	_ = syscall.Kill(d.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-d.exited:
		c.log.Info("member daemon stopped", "member", m.Name)
		return nil
	case <-time.After(60 * time.Second):
	case <-ctx.Done():
	}
	_ = syscall.Kill(d.cmd.Process.Pid, syscall.SIGKILL)
	<-d.exited
	return fmt.Errorf("incusd of %s did not stop on SIGTERM; killed", m.Name)
}

// StartMember restarts the daemon of member i after StopMember and waits
// until the cluster reports the member online.
func (c *Cluster) StartMember(ctx context.Context, i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, err := c.member(i)
	if err != nil || m.daemon != nil {
		return err
	}
	if err := c.startDaemon(ctx, m); err != nil {
		return err
	}
	return c.waitUsable(ctx, m)
}

// Stop deletes everything the cluster holds (restarting stopped members
// first), shuts every member down, and checks that no process, mount, loop
// device or network interface of the cluster is left; then removes Dir.
func (c *Cluster) Stop(ctx context.Context) error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return nil
	}
	c.stopped = true
	var errs []error
	if c.Client != nil {
		c.Client.Disconnect()
	}
	var emptyErrs []error
	if c.formed {
		var down []*Member
		for _, m := range c.Members {
			if m.daemon == nil && m.machine != nil {
				if err := c.startDaemon(ctx, m); err != nil {
					errs = append(errs, fmt.Errorf("restart %s for clean-up: %w", m.Name, err))
					continue
				}
				down = append(down, m)
			}
		}
		for _, m := range down {
			if err := c.waitUsable(ctx, m); err != nil {
				errs = append(errs, fmt.Errorf("restart %s for clean-up: %w", m.Name, err))
			}
		}
		emptyErrs = append(emptyErrs, c.empty(ctx))
	} else {
		for _, m := range c.Members {
			if m.daemon != nil {
				emptyErrs = append(emptyErrs, m.daemon.Empty(ctx))
			}
		}
	}
	emptyErr := errors.Join(emptyErrs...)
	emptied := emptyErr == nil && len(errs) == 0 // every member back and emptied
	errs = append(errs, emptyErr, c.shutdown(ctx, emptied))
	c.relaysMu.Lock()
	for _, r := range c.relays {
		r.close()
	}
	c.relays = nil
	c.relaysMu.Unlock()
	for _, m := range c.Members {
		if m.machine == nil {
			continue
		}
		if ifs, err := m.Interfaces(); err == nil {
			for _, ifc := range ifs {
				if ifc.Name != "lo" {
					errs = append(errs, fmt.Errorf("incustest: network interface %s left in %s's namespace", ifc.Name, m.Name))
				}
			}
		}
		m.machine.close()
	}
	if err := c.waitNothingLeft(ctx); err != nil {
		errs = append(errs, err)
	} else if err := os.RemoveAll(c.Dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// shutdown asks every running member to shut down (as `incus admin
// shutdown` does) at once. Members that shut down one after the other would
// leave the last ones without a database quorum: they then wait for
// database timeouts (10 to 30s) before they exit. Once the cluster is
// emptied they hold nothing that needs a graceful stop (their mounts go with
// their mount namespaces, which the leak check watches), so a member still
// running a few seconds after another has exited is killed.
func (c *Cluster) shutdown(ctx context.Context, emptied bool) error {
	type stopping struct {
		m *Member
		d *Daemon
	}
	var all []stopping
	for _, m := range c.Members {
		if m.daemon != nil {
			all = append(all, stopping{m, m.daemon})
			m.daemon, m.Client = nil, nil
		}
	}
	start := time.Now()
	for _, s := range all {
		go func() {
			// The daemon answers once it is done, or the connection breaks
			// as it exits; either way its exit is what counts.
			_, _, _ = s.d.Client.RawQuery("PUT", "/internal/shutdown?timeout=30", nil, "")
		}()
	}
	exits := make(chan int, len(all))
	for i, s := range all {
		go func() { <-s.d.exited; exits <- i }()
	}
	exited := make([]bool, len(all))
	grace := time.NewTimer(60 * time.Second)
	defer grace.Stop()
	shortened := false
wait:
	for range all {
		select {
		case i := <-exits:
			exited[i] = true
			c.log.Info("member daemon shut down", "member", all[i].m.Name, "took", time.Since(start))
			if emptied && !shortened {
				shortened = true
				grace.Reset(5 * time.Second)
			}
		case <-grace.C:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	var errs []error
	for i, s := range all {
		if exited[i] {
			continue
		}
		_ = syscall.Kill(-s.d.cmd.Process.Pid, syscall.SIGKILL)
		<-s.d.exited
		if shortened {
			c.log.Info("member daemon killed after the others shut down", "member", s.m.Name, "took", time.Since(start))
		} else {
			errs = append(errs, fmt.Errorf("incusd of %s did not exit after shutdown; killed", s.m.Name))
		}
	}
	for _, s := range all {
		s.d.Client.Disconnect()
	}
	return errors.Join(errs...)
}

// empty deletes everything the cluster holds (see emptyServer).
func (c *Cluster) empty(ctx context.Context) error {
	client := c.runningClient()
	if client == nil {
		return errors.New("incustest: no cluster member runs to clean up with")
	}
	return emptyServer(ctx, client)
}

// resetClusterGroups puts every member back in the default group only and
// deletes the other groups.
func resetClusterGroups(client incus.InstanceServer) error {
	var errs []error
	note := func(what string, err error) {
		if err != nil && !api.StatusErrorCheck(err, 404) {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		}
	}
	groups, err := client.GetClusterGroupNames()
	note("list cluster groups", err)
	if slices.ContainsFunc(groups, func(g string) bool { return g != "default" }) {
		members, err := client.GetClusterMembers()
		note("list cluster members", err)
		for _, m := range members {
			if len(m.Groups) != 1 || m.Groups[0] != "default" {
				put := m.Writable()
				put.Groups = []string{"default"}
				note("reset groups of "+m.ServerName, client.UpdateClusterMember(m.ServerName, put, ""))
			}
		}
		for _, g := range groups {
			if g != "default" {
				note("delete cluster group "+g, client.DeleteClusterGroup(g))
			}
		}
	}
	return errors.Join(errs...)
}

// waitNothingLeft waits briefly for the kernel to release what the
// members' namespaces held, then reports whatever is still there.
func (c *Cluster) waitNothingLeft(ctx context.Context) error {
	reapZombies()
	left, pids := c.leftovers()
	deadline := time.After(10 * time.Second)
	for len(left) > 0 {
		select {
		case <-deadline:
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
			reapZombies()
			left, pids = c.leftovers()
			continue
		}
		// Report, but leave nothing running on the machine: the processes
		// live in the members' namespaces and belong to this cluster.
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(200 * time.Millisecond)
		reapZombies()
		return fmt.Errorf("incustest: cluster in %s left behind (processes now killed): %s", c.Dir, strings.Join(left, "; "))
	}
	return nil
}

// leftovers finds processes, mounts and loop devices that refer to the
// cluster's directory, and its bridge on the host.
func (c *Cluster) leftovers() (left []string, pids []int) {
	me := strconv.Itoa(os.Getpid())
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		if filepath.Base(p) == me {
			continue
		}
		cmdline, err := os.ReadFile(p + "/cmdline")
		if err != nil || len(cmdline) == 0 {
			continue // gone, or a kernel thread or zombie
		}
		environ, _ := os.ReadFile(p + "/environ")
		if strings.Contains(string(cmdline), c.Dir) || strings.Contains(string(environ), "INCUS_DIR="+c.Dir) {
			left = append(left, fmt.Sprintf("process %s: %s", filepath.Base(p), strings.ReplaceAll(string(cmdline), "\x00", " ")))
			if pid, err := strconv.Atoi(filepath.Base(p)); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	if f, err := os.Open("/proc/self/mountinfo"); err == nil {
		s := bufio.NewScanner(f)
		for s.Scan() {
			fields := strings.Fields(s.Text())
			if len(fields) > 4 && strings.HasPrefix(fields[4], c.Dir) {
				left = append(left, "mount "+fields[4])
			}
		}
		f.Close()
	}
	backing, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, p := range backing {
		b, _ := os.ReadFile(p)
		if strings.HasPrefix(strings.TrimSpace(string(b)), c.Dir) {
			left = append(left, "loop device "+strings.Split(p, "/")[3]+" on "+strings.TrimSpace(string(b)))
		}
	}
	if c.Network != "" {
		if _, err := net.InterfaceByName(c.Network); err == nil {
			left = append(left, "network interface "+c.Network+" on the host")
		}
	}
	return left, pids
}

var sharedCluster struct {
	sync.Mutex
	main bool
	c    *Cluster
	err  error
}

// ClusterOf starts a private cluster of n members for one test and stops
// it, checking that nothing is left, at the test's end.
func ClusterOf(t testing.TB, n int) *Cluster {
	t.Helper()
	return PrivateCluster(t, ClusterOptions{Members: n})
}

// PrivateCluster starts a private cluster with opts for one test and stops
// it at the test's end.
func PrivateCluster(t testing.TB, opts ClusterOptions) *Cluster {
	t.Helper()
	if os.Getenv(EnvIntegration) == "off" {
		t.Skip("integration tests disabled: " + EnvIntegration + "=off")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c, err := StartCluster(ctx, opts)
	if err != nil {
		SkipOrFail(t, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			t.Errorf("stop private cluster: %v", err)
		}
	})
	return c
}

// SharedCluster returns the test binary's three-member cluster, starting
// it on first use; Main, which must be the package's TestMain body, stops
// it once all tests have run. Tests sharing it use unique names and
// leave every member running.
func SharedCluster(t testing.TB) *Cluster {
	t.Helper()
	if os.Getenv(EnvIntegration) == "off" {
		t.Skip("integration tests disabled: " + EnvIntegration + "=off")
	}
	sharedCluster.Lock()
	defer sharedCluster.Unlock()
	if !sharedCluster.main {
		t.Fatal("incustest.SharedCluster needs `func TestMain(m *testing.M) { incustest.Main(m) }`")
	}
	if sharedCluster.c == nil && sharedCluster.err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		sharedCluster.c, sharedCluster.err = StartCluster(ctx, ClusterOptions{})
		cancel()
	}
	if sharedCluster.err != nil {
		SkipOrFail(t, sharedCluster.err)
	}
	return sharedCluster.c
}
