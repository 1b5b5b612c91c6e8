// Package daprd runs real Dapr sidecars (daprd, built from github.com/dapr/dapr at the version
// go.mod pins) in self-hosted mode with mTLS on, against the Sigil binary as their sentry.
//
// Every scenario starts its own Sigil (a CA made by `sigil ca init`) and its own sidecars, each
// in front of a tiny HTTP app; the test plays app A's code, calling app B through both sidecars
// (daprd HTTP API -> daprd-to-daprd gRPC over mTLS -> app). Processes are driven by Dapr's
// integration framework (process/daprd, process/exec). Figures are logged as "FIGURES".
//
//	SIGIL_PATH                   target/release/sigil
//	DAPR_INTEGRATION_DAPRD_PATH  daprd built from ./cmd/daprd
//	DAPRD_SOAK                   how long the renewal scenario invokes (default 3m)
//	DAPRD_CERT_TTL               workloadCertTTL of the renewal and rotation scenarios (default 1m)
package daprd

import (
	"context"
	"crypto/x509"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	procdaprd "github.com/dapr/dapr/tests/integration/framework/process/daprd"
)

const (
	// daprd renews at half of NotBefore..NotAfter and Sigil backdates NotBefore by the allowed
	// clock skew; with Dapr's default skew (15m) a 1-minute certificate would be "due" at once.
	shortSkew = time.Second
	// One invocation every interval in the continuous loops (alternating directions).
	loopInterval = 50 * time.Millisecond
)

func figures(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Logf("FIGURES %s: "+format, append([]any{t.Name()}, args...)...)
}

// Two sidecars, two apps: A calls B and B calls A through both sidecars over mTLS, and what
// each sidecar presents on its mTLS port is a certificate Sigil issued for its SPIFFE ID.
func TestInvocationOverSigilMTLS(t *testing.T) {
	sigilPath, _ := binaries(t)
	ctx := testContext(t, 2*time.Minute)
	started := time.Now()

	s := newSigil(t, sigilPath, sigilOptions{ttl: time.Hour, skew: 15 * time.Minute})
	s.start(t, ctx)
	cfg := daprdConfig(t)
	a := startSidecar(t, ctx, s, cfg, "app-a")
	b := startSidecar(t, ctx, s, cfg, "app-b")

	issuer := s.issuer(t)
	for _, d := range []*sidecar{a, b} {
		leaf, _ := requireSigilChain(t, ctx, s, d, issuer)
		// Sigil's policy, not daprd's request: lifetime = workloadCertTTL + skew.
		require.InDelta(t, (time.Hour + 15*time.Minute).Seconds(), leaf.NotAfter.Sub(leaf.NotBefore).Seconds(), 2)
		require.NotContains(t, d.log.String(), "jwt expires on", "JWT is off: daprd must not hold a JWT-SVID")
	}

	client := &http.Client{Timeout: 5 * time.Second}
	const n = 50
	for i := range n {
		require.NoError(t, invoke(ctx, client, a, b, "ping"))
		require.NoError(t, invoke(ctx, client, b, a, "pong"))
		_ = i
	}
	require.EqualValues(t, n, b.app.hits.Load())
	require.EqualValues(t, n, a.app.hits.Load())

	signed := s.metric(t, "dapr_sentry_cert_sign_success_total")
	require.Equal(t, 2.0, signed, "one certificate per sidecar")
	require.Zero(t, s.metric(t, "dapr_sentry_cert_sign_failure_total"))
	figures(t, "invocations=%d failures=0 signed=%.0f duration=%s", 2*n, signed, time.Since(started).Round(time.Millisecond))
}

// A short workloadCertTTL: daprd renews from Sigil again and again, serves every renewed
// certificate, and invocations never fail. A third sidecar joining late makes fresh mTLS
// connections with renewed certificates on both ends.
func TestRenewalShortTTL(t *testing.T) {
	sigilPath, _ := binaries(t)
	soak := envDuration(t, "DAPRD_SOAK", 3*time.Minute)
	ttl := envDuration(t, "DAPRD_CERT_TTL", time.Minute)
	ctx := testContext(t, soak+2*time.Minute)

	s := newSigil(t, sigilPath, sigilOptions{ttl: ttl, skew: shortSkew})
	s.start(t, ctx)
	cfg := daprdConfig(t)
	a := startSidecar(t, ctx, s, cfg, "app-a")
	b := startSidecar(t, ctx, s, cfg, "app-b")
	issuer := s.issuer(t)
	for _, d := range []*sidecar{a, b} {
		leaf, _ := requireSigilChain(t, ctx, s, d, issuer)
		require.InDelta(t, (ttl + shortSkew).Seconds(), leaf.NotAfter.Sub(leaf.NotBefore).Seconds(), 2)
	}
	initial := s.metric(t, "dapr_sentry_cert_sign_success_total")
	require.Equal(t, 2.0, initial)

	started := time.Now()
	l := startLoop(ctx, loopInterval, [2]*sidecar{a, b}, [2]*sidecar{b, a})
	o := watch(ctx, s.trustAnchors(t), 2*time.Second, func() []*x509.Certificate { return []*x509.Certificate{issuer} }, a, b)

	// Two thirds in, a third sidecar joins: A and B (on renewed certificates by then) must
	// handshake with it from scratch.
	sleepCtx(ctx, soak*2/3)
	c := startSidecar(t, ctx, s, cfg, "app-c")
	requireSigilChain(t, ctx, s, c, issuer)
	l.add([2]*sidecar{a, c}, [2]*sidecar{c, b})
	sleepCtx(ctx, soak-time.Since(started))

	l.stop()
	o.stop(t)
	require.NoError(t, ctx.Err())

	signed := s.metric(t, "dapr_sentry_cert_sign_success_total")
	renewals := signed - initial - 1 // the late sidecar's first certificate is no renewal
	// daprd renews at half life: (ttl+skew)/2 apart.
	period := (ttl + shortSkew) / 2
	perSidecar := int(soak/period) - 1
	require.GreaterOrEqual(t, renewals, float64(2*perSidecar), "renewals signed by Sigil")
	for _, d := range []*sidecar{a, b} {
		require.GreaterOrEqual(t, o.distinct(d.AppID()), perSidecar+1, "%s: distinct certificates served", d.AppID())
	}
	require.Zero(t, s.metric(t, "dapr_sentry_cert_sign_failure_total"))
	l.requireNoFailures(t, int64(soak/loopInterval)/2)
	require.Positive(t, c.app.hits.Load())
	figures(t, "ttl=%s soak=%s invocations=%d failures=%d sign_success=%.0f renewals_all_sidecars=%.0f distinct_certs_served(a,b)=%d,%d late_joiner_hits=%d",
		ttl, l.elapsed.Round(time.Millisecond), l.ok.Load(), l.failed.Load(), signed, renewals,
		o.distinct(a.AppID()), o.distinct(b.AppID()), c.app.hits.Load())
}

// Issuer rotation (`sigil ca rotate`) and then a Sigil restart, while the sidecars invoke each
// other continuously: no invocation fails, the sidecars move to the new issuer by renewing,
// renew again from the restarted Sigil, and a sidecar started afterwards talks to both.
func TestRotationAndRestart(t *testing.T) {
	sigilPath, _ := binaries(t)
	ttl := envDuration(t, "DAPRD_CERT_TTL", time.Minute)
	// Sigil is down from 2 s before a renewal is due: daprd's attempt fails, its retry 10 s later
	// too, the next one succeeds, with half the certificate's lifetime (30 s) to spare.
	down := 15 * time.Second
	ctx := testContext(t, 5*time.Minute)

	s := newSigil(t, sigilPath, sigilOptions{ttl: ttl, skew: shortSkew})
	s.start(t, ctx)
	cfg := daprdConfig(t)
	a := startSidecar(t, ctx, s, cfg, "app-a")
	b := startSidecar(t, ctx, s, cfg, "app-b")
	oldIssuer := s.issuer(t)
	for _, d := range []*sidecar{a, b} {
		requireSigilChain(t, ctx, s, d, oldIssuer)
	}
	anchors := s.trustAnchors(t)

	started := time.Now()
	l := startLoop(ctx, loopInterval, [2]*sidecar{a, b}, [2]*sidecar{b, a})
	sleepCtx(ctx, 5*time.Second)

	// 1. Rotate the issuer on disk; the running Sigil picks it up without a restart.
	s.rotate(t)
	newIssuer := s.issuer(t)
	require.NotEqual(t, oldIssuer.Raw, newIssuer.Raw)
	rotated := time.Now()
	require.Eventually(t, func() bool { return s.current(t, "dapr_sentry_issuercert_changed_total") >= 1 },
		20*time.Second, 200*time.Millisecond, "Sigil did not load the rotated issuer")
	issuers := []*x509.Certificate{oldIssuer, newIssuer}
	o := watch(ctx, anchors, 2*time.Second, func() []*x509.Certificate { return issuers }, a, b)

	// Each sidecar's next renewal comes from the new issuer.
	onNew := func(d *sidecar) func() bool {
		return func() bool {
			chain, err := servedChain(ctx, d)
			if err != nil {
				return false
			}
			_, which, err := checkChain(anchors, d, chain, issuers)
			return err == nil && which == 1
		}
	}
	for _, d := range []*sidecar{a, b} {
		require.Eventually(t, onNew(d), ttl+10*time.Second, 500*time.Millisecond, "%s never served a certificate of the new issuer", d.AppID())
	}
	movedAfter := time.Since(rotated)

	// 2. Restart Sigil: SIGINT (exit 0 asserted), down for `down`, start on the same ports.
	// Stopped just before the next renewal falls due (daprd renews at half of NotBefore..NotAfter
	// of the certificate it holds), so that daprd's renewal meets no Sigil, fails, and retries.
	for {
		due := time.Time{}
		for _, d := range []*sidecar{a, b} {
			leaf, _ := requireSigilChain(t, ctx, s, d, issuers...)
			r := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
			if due.IsZero() || r.Before(due) {
				due = r
			}
		}
		if time.Until(due) >= 3*time.Second {
			sleepCtx(ctx, time.Until(due)-2*time.Second)
			break
		}
		sleepCtx(ctx, time.Until(due)+3*time.Second)
		require.NoError(t, ctx.Err())
	}
	s.stop(t)
	stoppedAt := time.Now()
	// What each sidecar serves once Sigil is gone: any other certificate later came from the
	// restarted process.
	before := map[string]string{}
	for _, d := range []*sidecar{a, b} {
		leaf, _ := requireSigilChain(t, ctx, s, d, issuers...)
		before[d.AppID()] = leaf.SerialNumber.String()
	}
	sleepCtx(ctx, down)
	s.start(t, ctx)
	upAt := time.Now()
	require.Equal(t, newIssuer.Raw, s.issuer(t).Raw)
	for _, d := range []*sidecar{a, b} {
		require.Eventually(t, func() bool {
			chain, err := servedChain(ctx, d)
			if err != nil {
				return false
			}
			leaf, which, err := checkChain(anchors, d, chain, issuers)
			return err == nil && which == 1 && leaf.SerialNumber.String() != before[d.AppID()]
		}, ttl+10*time.Second, 500*time.Millisecond, "%s never renewed from the restarted Sigil", d.AppID())
	}
	afterRestart := s.current(t, "dapr_sentry_cert_sign_success_total")
	require.GreaterOrEqual(t, afterRestart, 2.0)

	// 3. A sidecar started now (issued by the restarted Sigil) and the two old ones handshake
	// from scratch.
	c := startSidecar(t, ctx, s, cfg, "app-c")
	_, which := requireSigilChain(t, ctx, s, c, issuers...)
	require.Equal(t, 1, which)
	l.add([2]*sidecar{a, c}, [2]*sidecar{c, b}, [2]*sidecar{b, c})
	sleepCtx(ctx, 10*time.Second)

	l.stop()
	o.stop(t)
	require.NoError(t, ctx.Err())
	l.requireNoFailures(t, int64(time.Since(started)/loopInterval)/2)
	require.Positive(t, c.app.hits.Load())
	signed := s.metric(t, "dapr_sentry_cert_sign_success_total")
	require.Zero(t, s.metric(t, "dapr_sentry_cert_sign_failure_total"))
	// While Sigil was down, a renewal fell due: daprd started it (and kept retrying), and, as
	// checked above, ended up with a certificate from the restarted Sigil.
	var whileDown []string
	longest := time.Duration(0)
	for _, d := range []*sidecar{a, b} {
		for _, r := range d.log.renewals(t) {
			if r.started.After(stoppedAt) && r.started.Before(upAt) {
				whileDown = append(whileDown, d.AppID())
				require.False(t, r.done.IsZero(), "%s: the renewal begun while Sigil was down never finished", d.AppID())
				longest = max(longest, r.done.Sub(r.started))
			}
		}
	}
	require.NotEmpty(t, whileDown, "no sidecar's renewal fell in Sigil's downtime (%s..%s)", stoppedAt.Format(time.RFC3339Nano), upAt.Format(time.RFC3339Nano))
	figures(t, "ttl=%s duration=%s invocations=%d failures=%d sign_success=%.0f (restarted process: %.0f) both_on_new_issuer_after=%s sigil_down=%s renewals_begun_while_down=%v longest_of_those=%s",
		ttl, l.elapsed.Round(time.Millisecond), l.ok.Load(), l.failed.Load(), signed, afterRestart,
		movedAfter.Round(time.Second), upAt.Sub(stoppedAt).Round(100*time.Millisecond), whileDown, longest.Round(100*time.Millisecond))
}

// JWT-SVIDs on: daprd takes Sigil's response only when `jwt` carries the trust domain in `aud`
// and each per_audience_jwts[k] has aud exactly [k]. The sidecars ask for two extra audiences.
func TestJWTSVIDs(t *testing.T) {
	sigilPath, _ := binaries(t)
	ctx := testContext(t, 2*time.Minute)
	started := time.Now()

	s := newSigil(t, sigilPath, sigilOptions{ttl: time.Hour, skew: 15 * time.Minute, extraArgs: []string{"--jwt-enabled=true", "--jwt-ttl=30m"}})
	s.start(t, ctx)
	cfg := daprdConfig(t)
	auds := []string{"api://orders", "spiffe://public/ns/default/billing"}
	a := startSidecar(t, ctx, s, cfg, "app-a", procdaprd.WithSentryRequestJwtAudiences(auds...))
	b := startSidecar(t, ctx, s, cfg, "app-b", procdaprd.WithSentryRequestJwtAudiences(auds...))

	issuer := s.issuer(t)
	for _, d := range []*sidecar{a, b} {
		requireSigilChain(t, ctx, s, d, issuer)
		logs := d.log.String()
		// daprd logs its identity with the JWT's expiry only when it parsed and kept the JWT.
		require.Contains(t, logs, "Successfully received JWT SVID with expiry", "%s took no JWT-SVID", d.AppID())
		require.Contains(t, logs, "jwt expires on", "%s holds no JWT-SVID", d.AppID())
		for _, line := range d.log.identityLines() {
			t.Logf("%s: %s", d.AppID(), line)
		}
		for _, aud := range auds {
			require.Contains(t, logs, "Successfully received per-audience JWT SVID for audience "+aud, "%s", d.AppID())
		}
	}
	client := &http.Client{Timeout: 5 * time.Second}
	for range 20 {
		require.NoError(t, invoke(ctx, client, a, b, "jwt"))
		require.NoError(t, invoke(ctx, client, b, a, "jwt"))
	}
	jwts := s.metric(t, "sigil_jwt_issued_total")
	// Per request: the base token and one per extra audience.
	require.GreaterOrEqual(t, jwts, float64(2*(1+len(auds))))
	require.Equal(t, 2.0, s.metric(t, "dapr_sentry_cert_sign_success_total"))
	figures(t, "sidecars=2 audiences=%d jwt_issued=%.0f invocations=40 failures=0 duration=%s", len(auds), jwts, time.Since(started).Round(time.Millisecond))
}

// testContext bounds a scenario. Its cancel runs after every other cleanup: the processes are
// started with it (exec.CommandContext), and cancelling it first would SIGKILL them before
// Dapr's framework stops them with SIGINT and checks their exit status.
func testContext(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
