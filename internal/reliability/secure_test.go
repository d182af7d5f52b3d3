package reliability_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/incusexec/incusexec/executor/incus"

	"github.com/incusexec/incusexec/executor"
	"github.com/incusexec/incusexec/instance"
	"github.com/incusexec/incusexec/internal/incustest"
	"github.com/incusexec/incusexec/netbridge"
	"github.com/lxc/incus/v6/shared/api"
	"github.com/matryer/is"
)

// TestLaunchedInstanceIsUnprivileged: what instance launches by default,
// with the default profile or the Debusine profile, is an unprivileged
// container without nesting: its root is an unprivileged host uid.
func TestLaunchedInstanceIsUnprivileged(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	d := incustest.Shared(t)
	// What the packages would set: neither the Debusine profile nor the
	// instance defaults ask for privileges.
	for k, v := range netbridge.DebusineProfile("o", "n", "p").Config {
		is.True(!strings.HasPrefix(k, "security.") || k == "security.secureboot") // only the VM Secure Boot key
		_ = v
	}
	_, in := launchBusybox(t, instance.Spec{})
	got, _, err := d.Client.GetInstance(in.Name())
	is.NoErr(err)
	is.True(got.ExpandedConfig["security.privileged"] != "true")
	is.True(got.ExpandedConfig["security.nesting"] != "true")
	var out bytes.Buffer
	_, err = in.Exec(ctxFor(t, time.Minute), executor.Cmd{Args: []string{"cat", "/proc/self/uid_map"}, Stdout: &out})
	is.NoErr(err)
	f := strings.Fields(out.String()) // "0 <host uid> <count>"
	is.True(len(f) >= 3)
	is.Equal(f[0], "0")
	hostUID, _ := strconv.Atoi(f[1])
	is.True(hostUID > 0) // root inside is not root outside
	t.Logf("uid_map: %s", strings.TrimSpace(out.String()))
}

// TestProcessLimitEnforced: limits.processes set through Spec.Config stops
// a fork bomb-like command short of the limit.
func TestProcessLimitEnforced(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	const limit = 30
	_, in := launchBusybox(t, instance.Spec{Config: map[string]string{"limits.processes": strconv.Itoa(limit)}})
	ctx := ctxFor(t, time.Minute)
	var out, errs bytes.Buffer
	_, err := in.Exec(ctx, executor.Cmd{Args: []string{"sh", "-c", "i=0; while [ $i -lt 100 ]; do sleep 5 & i=$((i+1)); done; echo spawned"}, Stdout: &out, Stderr: &errs, Timeout: 30 * time.Second})
	is.NoErr(err)
	t.Logf("stdout: %q, stderr: %.200s", out.String(), errs.String())
	is.True(strings.Contains(errs.String(), "can't fork")) // forks were refused
	st, err := in.Stats(ctx)
	is.NoErr(err)
	t.Logf("%d processes under limits.processes=%d", st.Processes, limit)
	is.True(st.Processes <= limit)
}

// TestHTTPSVerifiesServer: the executor's HTTPS connection verifies the
// server: with the server's certificate pinned it connects; with another
// certificate pinned, or none (the system's roots, which do not know a
// self-signed daemon), it refuses, naming the certificate problem.
func TestHTTPSVerifiesServer(t *testing.T) {
	is := is.New(t)
	d := incustest.Shared(t)
	srv, _, err := d.Client.GetServer()
	is.NoErr(err)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	is.NoErr(err)
	addr := l.Addr().String()
	l.Close()
	put := srv.Writable()
	put.Config["core.https_address"] = addr
	is.NoErr(d.Client.UpdateServer(put, ""))
	t.Cleanup(func() {
		srv, _, err := d.Client.GetServer()
		if err == nil {
			put := srv.Writable()
			delete(put.Config, "core.https_address")
			_ = d.Client.UpdateServer(put, "")
		}
	})
	certPEM, keyPEM, err := incustest.NewClientCertificate("reliability")
	is.NoErr(err)
	block, _ := pem.Decode([]byte(certPEM))
	c, err := x509.ParseCertificate(block.Bytes)
	is.NoErr(err)
	name := incustest.UniqueName("reliability-")
	is.NoErr(d.Client.CreateCertificate(api.CertificatesPost{CertificatePut: api.CertificatePut{Name: name, Type: "client", Certificate: base64.StdEncoding.EncodeToString(block.Bytes)}}))
	t.Cleanup(func() { _ = d.Client.DeleteCertificate(fingerprint(c)) })

	srv, _, err = d.Client.GetServer()
	is.NoErr(err)
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		is.NoErr(os.WriteFile(p, []byte(data), 0o600))
		return p
	}
	clientCert, clientKey := write("client.crt", certPEM), write("client.key", keyPEM)
	serverCert := write("server.crt", srv.Environment.Certificate)
	otherPEM, _, err := incustest.NewClientCertificate("impostor")
	is.NoErr(err)
	other := write("other.crt", otherPEM)

	connect := func(server string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		b, err := incus.NewBackend(ctx, incus.Config{Remote: "https://" + addr, ClientCert: clientCert, ClientKey: clientKey, ServerCert: server, Owner: name, Reconnect: -1})
		if err == nil {
			defer b.Close()
			_, err = b.Client().GetInstanceNames(api.InstanceTypeAny)
		}
		return err
	}
	is.NoErr(connect(serverCert)) // pinned: verified and trusted
	for what, server := range map[string]string{"another certificate pinned": other, "no pin, system roots": ""} {
		err := connect(server)
		t.Logf("%s: %v", what, err)
		is.True(err != nil) // never connects without verifying
		is.True(errors.Is(err, executor.ErrUnavailable))
		is.True(strings.Contains(err.Error(), "certificate"))
	}
}

func fingerprint(c *x509.Certificate) string {
	const hex = "0123456789abcdef"
	sum := sha256sum(c.Raw)
	var b strings.Builder
	for _, x := range sum {
		b.WriteByte(hex[x>>4])
		b.WriteByte(hex[x&15])
	}
	return b.String()
}
