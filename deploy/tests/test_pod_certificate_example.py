"""The example workload asks for what the signer manifest serves: the signer name of
deploy/manifests/sigil-pod-certificates.yaml, a key type Sigil signs, and the trust anchors
from the ClusterTrustBundle Sigil publishes (its signer name and label)."""

import pathlib

from conftest import find, load_docs

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "pod-certificate-workload.yaml"
# Key types of the podCertificate volume Sigil signs (it denies ECDSAP521).
SIGNED_KEY_TYPES = {"ECDSAP256", "ECDSAP384", "ED25519", "RSA3072", "RSA4096"}


def sources(pod: dict) -> list:
    out = []
    for v in pod["spec"]["volumes"]:
        out += v.get("projected", {}).get("sources", [])
    return out


def test_example_matches_the_signer_manifest(shipped_pod_certificates):
    args = find(shipped_pod_certificates, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    signer = next(a.split("=", 1)[1] for a in args if a.startswith("--pod-certificate-signer="))
    pod = load_docs(EXAMPLE.read_text())[0]
    cert = [s["podCertificate"] for s in sources(pod) if "podCertificate" in s]
    bundle = [s["clusterTrustBundle"] for s in sources(pod) if "clusterTrustBundle" in s]
    assert len(cert) == 1 and len(bundle) == 1
    assert cert[0]["signerName"] == signer
    assert cert[0]["keyType"] in SIGNED_KEY_TYPES
    assert 3600 <= cert[0].get("maxExpirationSeconds", 86400) <= 7862400
    assert bundle[0]["signerName"] == signer
    # The label Sigil puts on its bundle (src/pod_certificates/trust_bundle.rs).
    assert bundle[0]["labelSelector"] == {"matchLabels": {"app.kubernetes.io/managed-by": "sigil"}}
    mounted = {m["name"] for c in pod["spec"]["containers"] for m in c.get("volumeMounts", [])}
    assert {v["name"] for v in pod["spec"]["volumes"]} <= mounted
