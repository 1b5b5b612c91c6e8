"""pkilint's verdict on a certificate, with the one finding pkilint gets wrong for SPIFFE.

Used by interop.py, and run on its own by tests/pod_certificates.rs for the chains the
PodCertificateRequest signer issues:

    python pkilint_judge.py --trust-domain TD CERT.pem...

prints one line per file and exits 1 when any file has an ERROR or FATAL finding.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

PASS, PASS_KNOWN, FAIL = "PASS", "PASS*", "FAIL"

# RFC 3986 appendix B, plus the generic-syntax rule that an authority follows "//".
RFC3986 = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(//([^/?#]*))?([^?#]*)(\?([^#]*))?(#(.*))?$")

NOTE_PKILINT_URI = (
    "pkilint 0.13.3 checks URI SANs with validators.url, which accepts only the schemes "
    "ftp, ftps, git, http, https, rtsp, sftp, ssh, telnet; every spiffe:// URI is reported "
    "as pkix.invalid_uri_syntax. The URI was checked here against RFC 3986 instead"
)


def rfc3986_spiffe(uri: str, trust_domain: str) -> bool:
    m = RFC3986.match(uri)
    return bool(m) and m.group(1) == "spiffe" and m.group(3) == trust_domain and not m.group(5)


def judge(lint_bin: str, path: str, trust_domain: str) -> tuple[str, str]:
    """(PASS | PASS* | FAIL, detail) for the PEM certificate at `path`."""
    r = subprocess.run(
        [lint_bin, "lint", "-s", "WARNING", "-f", "JSON", path],
        capture_output=True, text=True,
    )
    try:
        results = json.loads(r.stdout)["results"]
    except (ValueError, KeyError):
        return FAIL, f"pkilint output unreadable (exit {r.returncode}): {r.stdout}{r.stderr}"
    errors, warnings, known = [], [], []
    for res in results:
        for d in res["finding_descriptions"]:
            words = f"{d['code']} ({d['severity']}) at {res['node_path']}: {d.get('message') or ''}"
            if d["severity"] in ("ERROR", "FATAL"):
                uri = (d.get("message") or "").removeprefix("Invalid URI syntax: ").strip('"')
                if d["code"] == "pkix.invalid_uri_syntax" and rfc3986_spiffe(uri, trust_domain):
                    known.append(words)
                else:
                    errors.append(words)
            else:
                warnings.append(words)
    if errors:
        return FAIL, "; ".join(errors)
    return (PASS_KNOWN if known else PASS), "; ".join(warnings)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trust-domain", required=True)
    ap.add_argument("certs", nargs="+")
    args = ap.parse_args()
    lint_bin = os.path.join(os.path.dirname(sys.executable), "lint_pkix_cert")
    failed = False
    for path in args.certs:
        status, detail = judge(lint_bin, path, args.trust_domain)
        print(f"{status} {path}: {detail}")
        failed |= status == FAIL
    print(f"({PASS_KNOWN}: {NOTE_PKILINT_URI})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
