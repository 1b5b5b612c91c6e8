#!/usr/bin/env python3
"""Renders the result lines of benches/compare.sh as Markdown tables with Sigil/Sentry ratios."""
import sys

rows = {}
for line in open(sys.argv[1]):
    parts = line.split()
    if not parts:
        continue
    rows[parts[0]] = dict(p.split("=", 1) for p in parts[1:] if "=" in p)


def get(label, key):
    v = rows.get(label, {}).get(key)
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def fmt(v, digits=0):
    return "—" if v is None else f"{v:.{digits}f}"


def ratio(a, b, digits=2):
    return "—" if a is None or b in (None, 0) else f"{a / b:.{digits}f}×"


print("Ed25519 CSRs (empty subject), both CAs on their default Ed25519 issuer, gRPC over TLS:\n")
print("| pattern | c | Sigil req/s | Sentry req/s | **ratio** | Sigil p50 / p99 ms | Sentry p50 / p99 ms | **p99 ratio** | Sigil CPU ms/cert | Sentry CPU ms/cert | **CPU ratio** | errors (Sigil/Sentry) |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for pat in ("reuse", "newconn"):
    for c in (1, 8, 32):
        s, d = f"sigil-ed25519-{pat}-c{c}", f"sentry-ed25519-{pat}-c{c}"
        print(
            f"| {'reused h2' if pat == 'reuse' else 'new TLS conn'} | {c} "
            f"| {fmt(get(s, 'rps'))} | {fmt(get(d, 'rps'))} | {ratio(get(s, 'rps'), get(d, 'rps'))} "
            f"| {fmt(get(s, 'p50_ms'), 2)} / {fmt(get(s, 'p99_ms'), 2)} | {fmt(get(d, 'p50_ms'), 2)} / {fmt(get(d, 'p99_ms'), 2)} "
            f"| {ratio(get(s, 'p99_ms'), get(d, 'p99_ms'))} "
            f"| {fmt(get(s, 'server_cpu_ms_per_cert'), 3)} | {fmt(get(d, 'server_cpu_ms_per_cert'), 3)} "
            f"| {ratio(get(s, 'server_cpu_ms_per_cert'), get(d, 'server_cpu_ms_per_cert'))} "
            f"| {fmt(get(s, 'errors'))}/{fmt(get(d, 'errors'))} |"
        )

print("\nP-256 CSRs: Sigil and Sentry on their Ed25519 issuer; cfssl (P-256 CA, HTTP/JSON without TLS) and Sigil with a P-256 CA:\n")
servers = [("sigil", "Sigil"), ("sentry", "Sentry"), ("cfssl", "cfssl"), ("sigil_p256ca", "Sigil P-256 CA")]
print("| pattern | c | " + " | ".join(f"{n} req/s, p99 ms, CPU ms/cert" for _, n in servers) + " | Sigil/Sentry req/s | Sigil P-256 CA/cfssl req/s | cfssl/Sigil P-256 CA CPU |")
print("|---|---|" + "---|" * len(servers) + "---|---|---|")
for pat, c in (("reuse", 1), ("reuse", 8), ("reuse", 32), ("newconn", 32)):
    cells = []
    for key, _ in servers:
        lbl = f"{key}-p256-{pat}-c{c}"
        cells.append(f"{fmt(get(lbl, 'rps'))}, {fmt(get(lbl, 'p99_ms'), 2)}, {fmt(get(lbl, 'server_cpu_ms_per_cert'), 3)}")
    sp, dp, fp, pp = (f"{k}-p256-{pat}-c{c}" for k, _ in servers)
    print(
        f"| {'reused' if pat == 'reuse' else 'new conn'} | {c} | " + " | ".join(cells)
        + f" | {ratio(get(sp, 'rps'), get(dp, 'rps'))} | {ratio(get(pp, 'rps'), get(fp, 'rps'))}"
        + f" | {ratio(get(fp, 'server_cpu_ms_per_cert'), get(pp, 'server_cpu_ms_per_cert'))} |"
    )

print("\nStart and memory (Ed25519 issuer; first start generates the CA into the empty directory):\n")
print("| | Sigil | Sentry | ratio |")
print("|---|---|---|---|")
for label, key, name in (
    ("first", "healthz_ms", "first start: to /healthz 200 (ms)"),
    ("first", "first_sign_ms", "first start: to first certificate (ms)"),
    ("", "healthz_ms", "restart with CA files: to /healthz 200 (ms)"),
    ("", "first_sign_ms", "restart with CA files: to first certificate (ms)"),
    ("", "idle_rss_mib", "idle RSS after the first certificate (MiB)"),
):
    suffix = f"-{label}" if label else ""
    s, d = get(f"start-sigil{suffix}", key), get(f"start-sentry{suffix}", key)
    print(f"| {name} | {fmt(s, 1 if 'rss' in key else 0)} | {fmt(d, 1 if 'rss' in key else 0)} | {ratio(s, d)} |")
for key, name in (("peak_rss_mib", "peak RSS after all cells, VmHWM (MiB)"), ("rss_mib", "RSS after all cells (MiB)")):
    s, d = get("end-sigil", key), get("end-sentry", key)
    print(f"| {name} | {fmt(s, 1)} | {fmt(d, 1)} | {ratio(s, d)} |")
if "start-cfssl" in rows:
    print(f"\ncfssl: idle RSS {fmt(get('start-cfssl', 'idle_rss_mib'), 1)} MiB, peak {fmt(get('end-cfssl', 'peak_rss_mib'), 1)} MiB; "
          f"Sigil with a P-256 CA: idle {fmt(get('start-sigil_p256ca', 'idle_rss_mib'), 1)} MiB, peak {fmt(get('end-sigil_p256ca', 'peak_rss_mib'), 1)} MiB.")

print("\nTargets (c=32, Ed25519 CSRs):\n")
for pat, name in (("reuse", "reused HTTP/2"), ("newconn", "new TLS connection per request")):
    s, d = f"sigil-ed25519-{pat}-c32", f"sentry-ed25519-{pat}-c32"
    checks = []
    r = get(s, "rps"), get(d, "rps")
    if None not in r:
        checks.append(f"req/s {r[0] / r[1]:.2f}× (≥ 3×: {'met' if r[0] >= 3 * r[1] else 'missed'})")
    cp = get(s, "server_cpu_ms_per_cert"), get(d, "server_cpu_ms_per_cert")
    if None not in cp and cp[1]:
        checks.append(f"CPU/cert {cp[0] / cp[1]:.2f}× (≤ 0.33×: {'met' if 3 * cp[0] <= cp[1] else 'missed'})")
    p = get(s, "p99_ms"), get(d, "p99_ms")
    if None not in p:
        checks.append(f"p99 {p[0]:.1f} vs {p[1]:.1f} ms ({'met' if p[0] < p[1] else 'missed'})")
    print(f"- {name}: " + "; ".join(checks))
s, d = get("start-sigil", "idle_rss_mib"), get("start-sentry", "idle_rss_mib")
if None not in (s, d):
    print(f"- idle RSS: {s:.1f} vs {d:.1f} MiB ({'met' if s < d else 'missed'})")
