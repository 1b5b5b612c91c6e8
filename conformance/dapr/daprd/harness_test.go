package daprd

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	osexec "os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	procdaprd "github.com/dapr/dapr/tests/integration/framework/process/daprd"
	"github.com/dapr/dapr/tests/integration/framework/process/exec"
	"github.com/dapr/dapr/tests/integration/framework/process/ports"
)

// The binaries under test. DAPR_INTEGRATION_DAPRD_PATH is the variable Dapr's framework
// (process/daprd) reads; SIGIL_PATH names target/release/sigil.
func binaries(t *testing.T) (sigilPath, daprdPath string) {
	t.Helper()
	sigilPath = os.Getenv("SIGIL_PATH")
	daprdPath = os.Getenv("DAPR_INTEGRATION_DAPRD_PATH")
	if sigilPath == "" || daprdPath == "" {
		t.Fatal("SIGIL_PATH (target/release/sigil) and DAPR_INTEGRATION_DAPRD_PATH (daprd built from ./cmd/daprd) must name the binaries under test")
	}
	for _, p := range []string{sigilPath, daprdPath} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("binary under test: %v", err)
		}
	}
	return sigilPath, daprdPath
}

func envDuration(t *testing.T, key string, fallback time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(key)
	if v == "" {
		return fallback
	}
	d, err := time.ParseDuration(v)
	require.NoError(t, err, "%s", key)
	return d
}

// sigil is one Sigil CA in standalone mode: its credentials directory (made by `sigil ca init`,
// root key kept for `sigil ca rotate`) and the server process, which can be restarted on the
// same ports while the sidecars run.
type sigil struct {
	bin       string
	dir       string
	creds     string
	rootKey   string
	config    string
	extraArgs []string

	port, healthzPort, metricsPort int

	proc    *exec.Exec
	running bool
	starts  int
	// Counter values of processes already stopped (a restart resets Prometheus counters).
	carried map[string]float64
}

type sigilOptions struct {
	ttl       time.Duration
	skew      time.Duration
	extraArgs []string
}

func newSigil(t *testing.T, bin string, o sigilOptions) *sigil {
	t.Helper()
	dir := t.TempDir()
	s := &sigil{
		bin:       bin,
		dir:       dir,
		creds:     filepath.Join(dir, "credentials"),
		rootKey:   filepath.Join(dir, "root.key"),
		config:    filepath.Join(dir, "daprsystem.yaml"),
		extraArgs: o.extraArgs,
		carried:   map[string]float64{},
	}
	run(t, bin, "ca", "init", "--out", s.creds, "--root-key-out", s.rootKey)

	// The Dapr Configuration Sigil reads in standalone mode (-config=<file>), as Sentry does.
	cfg := fmt.Sprintf(`apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: daprsystem
spec:
  mtls:
    enabled: true
    workloadCertTTL: %s
    allowedClockSkew: %s
`, o.ttl, o.skew)
	require.NoError(t, os.WriteFile(s.config, []byte(cfg), 0o600))

	fp := ports.Reserve(t, 3)
	s.port, s.healthzPort, s.metricsPort = fp.Port(t), fp.Port(t), fp.Port(t)
	fp.Free(t)
	t.Cleanup(func() {
		if s.running {
			s.stop(t)
		}
	})
	return s
}

func run(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := osexec.Command(bin, args...).CombinedOutput()
	require.NoError(t, err, "%s %s:\n%s", bin, strings.Join(args, " "), out)
	return string(out)
}

func (s *sigil) Address() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

func (s *sigil) start(t *testing.T, ctx context.Context) {
	t.Helper()
	require.False(t, s.running)
	args := append([]string{
		"serve",
		"--mode=standalone",
		"--issuer-credentials=" + s.creds,
		"--config=" + s.config,
		"--trust-domain=localhost",
		"--listen-address=127.0.0.1",
		"--port=" + strconv.Itoa(s.port),
		"--healthz-listen-address=127.0.0.1",
		"--healthz-port=" + strconv.Itoa(s.healthzPort),
		"--enable-metrics",
		"--metrics-listen-address=127.0.0.1",
		"--metrics-port=" + strconv.Itoa(s.metricsPort),
		"--log-level=info",
	}, s.extraArgs...)
	// Dapr's exec process: logs into the test output, SIGINT on stop, exit code 0 asserted.
	s.proc = exec.New(t, s.bin, args)
	s.proc.Run(t, ctx)
	s.running = true
	s.starts++

	client := &http.Client{Timeout: time.Second}
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", s.healthzPort)
	require.Eventually(t, func() bool {
		resp, err := client.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 20*time.Second, 50*time.Millisecond, "sigil never became healthy")
}

// stop sends SIGINT and waits; Dapr's exec asserts a clean exit (status 0).
func (s *sigil) stop(t *testing.T) {
	t.Helper()
	require.True(t, s.running)
	for name, v := range s.scrape(t) {
		s.carried[name] += v
	}
	s.proc.Cleanup(t)
	s.running = false
}

// scrape reads the running process's metrics: unlabelled sums per metric name.
func (s *sigil) scrape(t *testing.T) map[string]float64 {
	t.Helper()
	resp, err := (&http.Client{Timeout: 3 * time.Second}).Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", s.metricsPort))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		name := fields[0]
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = name[:i]
		}
		v, err := strconv.ParseFloat(fields[1], 64)
		require.NoError(t, err, "metrics line %q", line)
		out[name] += v
	}
	require.NoError(t, sc.Err())
	return out
}

// metric is a counter over every process this sigil has run.
func (s *sigil) metric(t *testing.T, name string) float64 {
	t.Helper()
	v := s.carried[name]
	if s.running {
		v += s.scrape(t)[name]
	}
	return v
}

// current reads a counter of the running process only.
func (s *sigil) current(t *testing.T, name string) float64 {
	t.Helper()
	return s.scrape(t)[name]
}

func (s *sigil) trustAnchors(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.creds, "ca.crt"))
	require.NoError(t, err)
	return b
}

// issuer is the certificate that signs now: the first one in issuer.crt.
func (s *sigil) issuer(t *testing.T) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.creds, "issuer.crt"))
	require.NoError(t, err)
	block, _ := pem.Decode(b)
	require.NotNil(t, block, "issuer.crt holds no PEM")
	c, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	return c
}

func (s *sigil) rotate(t *testing.T) {
	t.Helper()
	run(t, s.bin, "ca", "rotate", "--dir", s.creds, "--root-cert", filepath.Join(s.creds, "ca.crt"), "--root-key", s.rootKey)
}

// app is a tiny HTTP application behind a sidecar: POST /x answers "<app-id>:<body>", and only
// when daprd forwarded it (the dapr-caller-app-id header daprd sets names a known caller).
type app struct {
	id   string
	port int
	hits atomic.Int64
}

func newApp(t *testing.T, id string) *app {
	t.Helper()
	a := &app{id: id}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	a.port = ln.Addr().(*net.TCPAddr).Port
	mux := http.NewServeMux()
	mux.HandleFunc("POST /x", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil || r.Header.Get("dapr-caller-app-id") == "" {
			http.Error(w, "not invoked through a sidecar", http.StatusBadRequest)
			return
		}
		a.hits.Add(1)
		fmt.Fprintf(w, "%s:%s", a.id, body)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return a
}

// logBuffer keeps a process's stdout so the test can read what daprd logged.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) Close() error { return nil }

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// identityLines are what daprd logged about the identity it obtained and renews.
func (l *logBuffer) identityLines() []string {
	var out []string
	for _, line := range strings.Split(l.String(), "\n") {
		if strings.Contains(line, "workload identity") || strings.Contains(line, "JWT SVID") {
			out = append(out, line)
		}
	}
	return out
}

// renewal is one renewal daprd logged: when it began and when it succeeded (zero if never).
type renewal struct{ started, done time.Time }

var logTime = regexp.MustCompile(`time="([^"]+)"`)

// renewals reads daprd's "Renewing workload identity" / "Successfully renewed workload
// identity" log lines (Dapr's kit/crypto/spiffe) in order.
func (l *logBuffer) renewals(t *testing.T) []renewal {
	t.Helper()
	var out []renewal
	for _, line := range strings.Split(l.String(), "\n") {
		begun := strings.Contains(line, "Renewing workload identity")
		done := strings.Contains(line, "Successfully renewed workload identity")
		if !begun && !done {
			continue
		}
		m := logTime.FindStringSubmatch(line)
		require.NotNil(t, m, "daprd log line without time: %s", line)
		at, err := time.Parse(time.RFC3339Nano, m[1])
		require.NoError(t, err)
		if begun {
			out = append(out, renewal{started: at})
		} else if len(out) > 0 && out[len(out)-1].done.IsZero() {
			out[len(out)-1].done = at
		}
	}
	return out
}

type sidecar struct {
	*procdaprd.Daprd
	app *app
	log *logBuffer
}

// SPIFFE ID daprd asks for in self-hosted mode: trust domain "public", namespace "default".
func (d *sidecar) spiffeID() string { return "spiffe://public/ns/default/" + d.AppID() }

// daprdConfig is the sidecars' Configuration: the SQLite name resolver on one shared file, so
// the sidecars find each other on loopback.
func daprdConfig(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "daprd.yaml")
	cfg := fmt.Sprintf(`apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: sidecars
spec:
  nameResolution:
    component: sqlite
    configuration:
      connectionString: %q
`, filepath.Join(dir, "nr.db"))
	require.NoError(t, os.WriteFile(path, []byte(cfg), 0o600))
	return path
}

// startSidecar runs a real daprd (self-hosted, mTLS on) whose sentry is Sigil, in front of a
// fresh app, and waits until daprd reports healthy (it obtains its identity before that).
func startSidecar(t *testing.T, ctx context.Context, s *sigil, config, appID string, extra ...procdaprd.Option) *sidecar {
	t.Helper()
	a := newApp(t, appID)
	logs := &logBuffer{}
	opts := append([]procdaprd.Option{
		procdaprd.WithAppID(appID),
		procdaprd.WithAppPort(a.port),
		procdaprd.WithMode("standalone"),
		procdaprd.WithEnableMTLS(true),
		procdaprd.WithSentryAddress(s.Address()),
		procdaprd.WithConfigs(config),
		procdaprd.WithLogLevel("info"),
		procdaprd.WithExecOptions(
			exec.WithEnvVars(t, "DAPR_TRUST_ANCHORS", string(s.trustAnchors(t))),
			exec.WithStdout(logs),
		),
	}, extra...)
	d := procdaprd.New(t, opts...)
	d.Run(t, ctx)
	t.Cleanup(func() { d.Cleanup(t) })
	d.WaitUntilRunning(t, ctx)
	return &sidecar{Daprd: d, app: a, log: logs}
}

// invoke calls `to` through from's sidecar: app -> daprd(from) -> mTLS -> daprd(to) -> app.
func invoke(ctx context.Context, client *http.Client, from, to *sidecar, payload string) error {
	url := fmt.Sprintf("http://%s/v1.0/invoke/%s/method/x", from.HTTPAddress(), to.AppID())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(payload))
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s -> %s: HTTP %d: %s", from.AppID(), to.AppID(), resp.StatusCode, body)
	}
	if want := to.AppID() + ":" + payload; string(body) != want {
		return fmt.Errorf("%s -> %s: got %q, want %q", from.AppID(), to.AppID(), body, want)
	}
	return nil
}

// loop invokes continuously (round robin over its routes, one call every interval) until
// stopped, and counts every outcome.
type loop struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	routes     [][2]*sidecar
	failures   []string
	cancel     context.CancelFunc
	done       chan struct{}
	started    time.Time
	elapsed    time.Duration
}

func startLoop(ctx context.Context, interval time.Duration, routes ...[2]*sidecar) *loop {
	ctx, cancel := context.WithCancel(ctx)
	l := &loop{routes: routes, cancel: cancel, done: make(chan struct{}), started: time.Now()}
	client := &http.Client{Timeout: 5 * time.Second}
	go func() {
		defer close(l.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			l.mu.Lock()
			r := l.routes[i%len(l.routes)]
			l.mu.Unlock()
			err := invoke(ctx, client, r[0], r[1], "n"+strconv.Itoa(i))
			if ctx.Err() != nil {
				return // stopped mid-call: not an outcome
			}
			if err != nil {
				l.failed.Add(1)
				l.mu.Lock()
				if len(l.failures) < 20 {
					l.failures = append(l.failures, time.Now().Format(time.RFC3339Nano)+" "+err.Error())
				}
				l.mu.Unlock()
				continue
			}
			l.ok.Add(1)
		}
	}()
	return l
}

func (l *loop) add(routes ...[2]*sidecar) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.routes = append(l.routes, routes...)
}

func (l *loop) stop() {
	l.cancel()
	<-l.done
	l.elapsed = time.Since(l.started)
}

// requireNoFailures: the loop ran, every invocation succeeded.
func (l *loop) requireNoFailures(t *testing.T, minOK int64) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	require.Zero(t, l.failed.Load(), "failed invocations (first ones):\n%s", strings.Join(l.failures, "\n"))
	require.GreaterOrEqual(t, l.ok.Load(), minOK, "too few invocations ran")
}

// servedChain dials daprd's internal gRPC port (the one sidecars call each other on) and
// returns the certificate chain daprd presents. The handshake is not completed (daprd wants a
// client certificate we do not have); the chain is checked by the caller against Sigil's roots.
func servedChain(ctx context.Context, d *sidecar) ([]*x509.Certificate, error) {
	var chain []*x509.Certificate
	cfg := &tls.Config{
		// Verification is done by checkChain, against Sigil's ca.crt, with the SPIFFE ID.
		InsecureSkipVerify: true, //nolint:gosec
		NextProtos:         []string{"h2"},
		VerifyConnection: func(cs tls.ConnectionState) error {
			chain = cs.PeerCertificates
			return nil
		},
	}
	dialer := tls.Dialer{NetDialer: &net.Dialer{Timeout: 3 * time.Second}, Config: cfg}
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := dialer.DialContext(cctx, "tcp", d.InternalGRPCAddress())
	if conn != nil {
		conn.Close()
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("no certificate from %s: %v", d.AppID(), err)
	}
	return chain, nil
}

// checkChain requires the chain daprd serves to be Sigil's: exactly one URI SAN, the sidecar's
// SPIFFE ID, no DNS SAN; leaf + issuer, the issuer being one of `issuers` (Sigil's issuer.crt,
// now or before a rotation); and a path to the roots in Sigil's ca.crt. Returns the leaf and
// the index of its issuer in `issuers`.
func checkChain(anchors []byte, d *sidecar, chain []*x509.Certificate, issuers []*x509.Certificate) (*x509.Certificate, int, error) {
	if len(chain) != 2 {
		return nil, -1, fmt.Errorf("%s presents %d certificates, want leaf + issuer (Sigil leaves the root out)", d.AppID(), len(chain))
	}
	leaf := chain[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != d.spiffeID() {
		return nil, -1, fmt.Errorf("%s presents URI SANs %v, want exactly [%s]", d.AppID(), leaf.URIs, d.spiffeID())
	}
	if len(leaf.DNSNames) != 0 {
		return nil, -1, fmt.Errorf("%s presents DNS SANs %v", d.AppID(), leaf.DNSNames)
	}
	which := -1
	for i, iss := range issuers {
		if bytes.Equal(chain[1].Raw, iss.Raw) {
			which = i
		}
	}
	if which < 0 {
		return nil, -1, fmt.Errorf("%s: issuer %q (serial %s) is not Sigil's issuer", d.AppID(), chain[1].Subject, chain[1].SerialNumber)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(anchors) {
		return nil, -1, fmt.Errorf("Sigil's ca.crt holds no certificate")
	}
	inter := x509.NewCertPool()
	inter.AddCert(chain[1])
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, -1, fmt.Errorf("%s: certificate does not chain to Sigil's ca.crt: %w", d.AppID(), err)
	}
	return leaf, which, nil
}

// requireSigilChain fetches and checks what d serves, in the test goroutine.
func requireSigilChain(t *testing.T, ctx context.Context, s *sigil, d *sidecar, issuers ...*x509.Certificate) (*x509.Certificate, int) {
	t.Helper()
	chain, err := servedChain(ctx, d)
	require.NoError(t, err)
	leaf, which, err := checkChain(s.trustAnchors(t), d, chain, issuers)
	require.NoError(t, err)
	return leaf, which
}

// observer samples what each sidecar serves (a fresh TLS handshake each time) and records the
// distinct leaf serials: each new serial is a renewal daprd obtained from Sigil and serves.
type observer struct {
	mu      sync.Mutex
	serials map[string]map[string]time.Time // app id -> serial -> first seen
	errs    []string
	cancel  context.CancelFunc
	done    chan struct{}
}

func (o *observer) record(d *sidecar, leaf *x509.Certificate) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.serials == nil {
		o.serials = map[string]map[string]time.Time{}
	}
	m := o.serials[d.AppID()]
	if m == nil {
		m = map[string]time.Time{}
		o.serials[d.AppID()] = m
	}
	if _, ok := m[leaf.SerialNumber.String()]; !ok {
		m[leaf.SerialNumber.String()] = time.Now()
	}
}

func (o *observer) distinct(appID string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.serials[appID])
}

// watch samples every `every` in the background; chains are checked with the sigil's issuers
// at sampling time (issuersFn).
func watch(ctx context.Context, anchors []byte, every time.Duration, issuersFn func() []*x509.Certificate, ds ...*sidecar) *observer {
	ctx, cancel := context.WithCancel(ctx)
	o := &observer{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(o.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			for _, d := range ds {
				chain, err := servedChain(ctx, d)
				if ctx.Err() != nil {
					return
				}
				if err != nil {
					o.fail(err.Error())
					continue
				}
				if _, _, err := checkChain(anchors, d, chain, issuersFn()); err != nil {
					o.fail(err.Error())
					continue
				}
				if now := time.Now(); now.After(chain[0].NotAfter) {
					o.fail(fmt.Sprintf("%s serves an expired certificate (NotAfter %s)", d.AppID(), chain[0].NotAfter))
					continue
				}
				o.record(d, chain[0])
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return o
}

func (o *observer) fail(msg string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.errs) < 20 {
		o.errs = append(o.errs, time.Now().Format(time.RFC3339Nano)+" "+msg)
	}
}

func (o *observer) stop(t *testing.T) {
	t.Helper()
	o.cancel()
	<-o.done
	o.mu.Lock()
	defer o.mu.Unlock()
	require.Empty(t, o.errs, "what a sidecar served was not a valid Sigil certificate")
}
