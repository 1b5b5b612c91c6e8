"""What the chart promises: Dapr's names and ports, HA, hardening, values that take effect,
and a trust bundle that no upgrade or uninstall wipes."""

import base64
import pathlib
import re

import kubernetes_validate
import pytest

from conftest import REPO, find, helm_template, one

KUBERNETES_VERSIONS = ["1.30.0", "1.35.0"]


def serve_flags() -> set:
    """The long flags `sigil serve` accepts, read from ServeArgs in src/config/flags.rs."""
    text = (REPO / "src" / "config" / "flags.rs").read_text()
    body = re.search(r"pub struct ServeArgs \{(.*?)\n\}", text, re.S)
    assert body, "ServeArgs not found in src/config/flags.rs"
    flags = set()
    for attrs, field in re.findall(r"((?:\s*#\[arg\([^\]]*\)\]\s*)+)\s*pub (\w+):", body.group(1)):
        named = re.search(r'long\s*=\s*"([^"]+)"', attrs)
        flags.add(named.group(1) if named else field.replace("_", "-"))
    assert {"trust-domain", "mode", "namespace", "log-as-json"} <= flags, flags
    return flags


def container(docs: list) -> dict:
    pod = one(docs, "Deployment", "dapr-sentry")["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1
    return pod["containers"][0]


def args_map(docs: list) -> dict:
    out = {}
    for a in container(docs)["args"][1:]:
        name, _, value = a.partition("=")
        out[name] = value
    return out


def port(c: dict, name: str) -> int:
    return next(p["containerPort"] for p in c["ports"] if p["name"] == name)


def test_every_flag_in_the_manifests_exists_in_sigil(shipped, render):
    known = serve_flags()
    variants = [shipped, render(values={"mtls": {"workloadCertTTL": "1h", "allowedClockSkew": "1m"},
                                        "metrics": {"enabled": False}, "logAsJson": False})]
    for docs in variants:
        args = container(docs)["args"]
        assert args[0] == "serve"
        for a in args[1:]:
            assert a.startswith("--"), a
            assert a[2:].partition("=")[0] in known, f"sigil serve has no flag {a}"


def test_deployment_defaults(shipped):
    dep = one(shipped, "Deployment", "dapr-sentry")
    assert dep["metadata"]["namespace"] == "dapr-system"
    assert dep["spec"]["replicas"] == 3
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "dapr-sentry"
    c = container(shipped)
    a = args_map(shipped)
    assert a["--mode"] == "kubernetes"
    assert a["--trust-domain"] == "cluster.local"
    assert a["--config"] == "daprsystem"
    assert a["--port"] == "50001" and port(c, "grpc") == 50001
    assert a["--healthz-port"] == "8080" and port(c, "healthz") == 8080
    assert a["--metrics-port"] == "9090" and port(c, "metrics") == 9090
    assert a["--enable-metrics"] == "true"
    assert "--log-as-json" in a
    # Empty TTL/skew values leave them to the Dapr Configuration.
    assert "--workload-cert-ttl" not in a and "--allowed-clock-skew" not in a
    assert c["env"] == [{"name": "NAMESPACE",
                         "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]
    assert c["resources"] == {"requests": {"cpu": "100m", "memory": "30Mi"},
                              "limits": {"cpu": "1", "memory": "200Mi"}}


def test_probes_use_healthz(shipped):
    c = container(shipped)
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "healthz"}, probe


def test_hardening(shipped):
    pod = one(shipped, "Deployment")["spec"]["template"]["spec"]
    sc = container(shipped)["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "hostNetwork" not in pod and "hostPID" not in pod


def test_high_availability(shipped):
    dep = one(shipped, "Deployment")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    terms = dep["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"]
    assert terms[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert terms[0]["podAffinityTerm"]["labelSelector"]["matchLabels"] == selector
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pdb = one(shipped, "PodDisruptionBudget", "dapr-sentry")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == selector


def test_service_is_daprs_dapr_sentry(shipped):
    svc = one(shipped, "Service", "dapr-sentry")
    assert svc["metadata"]["namespace"] == "dapr-system"
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert ports["grpc"]["port"] == 443 and ports["grpc"]["targetPort"] == "grpc"
    assert ports["metrics"]["port"] == 9090 and ports["metrics"]["targetPort"] == "metrics"
    pod_labels = one(shipped, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    # Dapr's tooling finds the CA by this label.
    assert pod_labels["app"] == "dapr-sentry"


def test_prometheus_annotations(shipped):
    ann = one(shipped, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert ann == {"prometheus.io/scrape": "true", "prometheus.io/port": "9090",
                   "prometheus.io/path": "/metrics"}


def test_trust_bundle_is_empty_and_kept(shipped):
    for kind in ("Secret", "ConfigMap"):
        obj = one(shipped, kind, "dapr-trust-bundle")
        assert obj["metadata"]["namespace"] == "dapr-system"
        assert obj["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        # No data: an upgrade then never touches what Sigil stored.
        assert "data" not in obj and "stringData" not in obj


def test_every_namespaced_object_is_in_the_release_namespace(render):
    docs = render(namespace="elsewhere")
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding"}
    for d in docs:
        if d["kind"] not in cluster_scoped:
            assert d["metadata"]["namespace"] == "elsewhere", d["kind"]


ROOT = "-----BEGIN CERTIFICATE-----\nUk9PVA==\n-----END CERTIFICATE-----\n"
ISSUER = "-----BEGIN CERTIFICATE-----\nSVNTVUVS\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nS0VZ\n-----END PRIVATE KEY-----\n"


def test_bring_your_own_ca_fills_the_trust_bundle(render):
    docs = render(values={"tls": {"root": {"certPEM": ROOT},
                                  "issuer": {"certPEM": ISSUER, "keyPEM": KEY}}})
    secret = one(docs, "Secret", "dapr-trust-bundle")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data == {"ca.crt": ROOT, "issuer.crt": ISSUER, "issuer.key": KEY}
    assert secret["metadata"]["annotations"]["sigil/ca-from-values"] == "true"
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    cm = one(docs, "ConfigMap", "dapr-trust-bundle")
    # The ConfigMap is public: the root only, never the key.
    assert cm["data"] == {"ca.crt": ROOT}


@pytest.mark.parametrize("partial", [
    {"root": {"certPEM": ROOT}},
    {"issuer": {"certPEM": ISSUER, "keyPEM": KEY}},
    {"root": {"certPEM": ROOT}, "issuer": {"certPEM": ISSUER}},
])
def test_partial_ca_is_refused(partial):
    result = helm_template(values={"tls": partial}, check=False)
    assert result.returncode != 0
    assert "must be given together" in result.stderr


def test_metrics_off(render):
    docs = render(values={"metrics": {"enabled": False}})
    assert args_map(docs)["--enable-metrics"] == "false"
    assert "metrics" not in {p["name"] for p in container(docs)["ports"]}
    assert "metrics" not in {p["name"] for p in one(docs, "Service")["spec"]["ports"]}
    assert "prometheus.io/scrape" not in (
        one(docs, "Deployment")["spec"]["template"]["metadata"].get("annotations") or {})


def test_values_reach_the_flags(render):
    docs = render(values={
        "trustDomain": "example.org", "clusterDomain": "corp.local", "config": "mine",
        "mtls": {"workloadCertTTL": "2h", "allowedClockSkew": "5m"},
        "logLevel": "debug", "logAsJson": False, "extraArgs": ["--token-cache-ttl=30s"],
        "image": {"repository": "registry.test/sigil", "tag": "9.9.9"},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
    })
    a = args_map(docs)
    assert a["--trust-domain"] == "example.org"
    assert a["--cluster-domain"] == "corp.local"
    assert a["--config"] == "mine"
    assert a["--workload-cert-ttl"] == "2h"
    assert a["--allowed-clock-skew"] == "5m"
    assert a["--log-level"] == "debug"
    assert "--log-as-json" not in a
    assert a["--token-cache-ttl"] == "30s"
    c = container(docs)
    assert c["image"] == "registry.test/sigil:9.9.9"
    # Helm merges maps: the limits not overridden stay.
    assert c["resources"] == {"requests": {"cpu": "50m", "memory": "64Mi"},
                              "limits": {"cpu": "1", "memory": "200Mi"}}


def test_image_digest_wins_over_tag(render):
    digest = "sha256:" + "ab" * 32
    docs = render(sets=[f"image.digest={digest}", "image.tag=1.0"])
    assert container(docs)["image"] == f"example.invalid/sigil@{digest}"


def test_single_replica_has_no_pdb(render):
    docs = render(sets=["replicaCount=1"])
    assert find(docs, "PodDisruptionBudget") == []
    assert one(docs, "Deployment")["spec"]["replicas"] == 1


def test_dapr_configuration_is_optional(shipped, render):
    assert find(shipped, "Configuration") == []
    validators = [{"name": "jwks", "options": {"source": "https://issuer.test/jwks.json"}}]
    docs = render(values={"daprConfiguration": {"create": True, "tokenValidators": validators,
                                                "workloadCertTTL": "12h"}})
    conf = one(docs, "Configuration", "daprsystem")
    assert conf["apiVersion"] == "dapr.io/v1alpha1"
    mtls = conf["spec"]["mtls"]
    assert mtls["workloadCertTTL"] == "12h"
    assert mtls["allowedClockSkew"] == "15m"
    assert mtls["controlPlaneTrustDomain"] == "cluster.local"
    assert mtls["tokenValidators"] == validators


VARIANTS = {
    "defaults": {},
    "byo-ca": {"tls": {"root": {"certPEM": ROOT}, "issuer": {"certPEM": ISSUER, "keyPEM": KEY}}},
    "minimal": {"replicaCount": 1, "metrics": {"enabled": False}, "logAsJson": False},
    "tuned": {"mtls": {"workloadCertTTL": "1h", "allowedClockSkew": "1m"},
              "priorityClassName": "system-cluster-critical",
              "imagePullSecrets": [{"name": "pull"}],
              "tolerations": [{"key": "control-plane", "operator": "Exists", "effect": "NoSchedule"}],
              "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                             "whenUnsatisfiable": "ScheduleAnyway",
                                             "labelSelector": {"matchLabels": {"app": "dapr-sentry"}}}],
              "podAnnotations": {"team": "platform"}, "podLabels": {"tier": "control-plane"},
              "service": {"annotations": {"note": "x"}}},
    "jwt-oidc-tls": {"jwt": {"enabled": True, "issuer": "https://issuer.example", "ttl": "1h"},
                     "oidc": {"enabled": True, "allowedHosts": ["issuer.example"],
                              "tls": {"secretName": "sigil-oidc-cert"}}},
    "jwt-oidc-plain": {"jwt": {"enabled": True}, "oidc": {"enabled": True, "tls": {"enabled": False},
                                                          "allowedHosts": ["issuer.example"]}},
    "network-policy": {"networkPolicy": {"enabled": True, "metricsFrom": [
                           {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]},
                       "jwt": {"enabled": True, "issuer": "https://issuer.example"},
                       "oidc": {"enabled": True, "tls": {"enabled": False}}},
}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variants_match_the_kubernetes_schemas(render, variant, version):
    docs = render(values=VARIANTS[variant])
    assert docs
    for d in docs:
        kubernetes_validate.validate(d, version, strict=True)


def test_shipped_manifest_header_says_how_it_is_made():
    text = (pathlib.Path(__file__).resolve().parent.parent / "manifests" / "sigil.yaml").read_text()
    assert "Generated by deploy/render.sh" in text.splitlines()[1]


def test_network_policy_is_optional_and_opens_only_what_is_asked(shipped, render):
    assert find(shipped, "NetworkPolicy", "dapr-sentry") == []
    docs = render(values=VARIANTS["network-policy"])
    np = one(docs, "NetworkPolicy", "dapr-sentry")
    assert np["spec"]["podSelector"]["matchLabels"] == \
        one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    rules = {r["ports"][0]["port"]: r.get("from") for r in np["spec"]["ingress"]}
    assert rules[50001] == [{"namespaceSelector": {}}]
    assert rules[8080] is None
    assert rules[9090] == VARIANTS["network-policy"]["networkPolicy"]["metricsFrom"]
    assert rules[9080] is None
    # Without metricsFrom the metrics port gets no rule: nobody may scrape it.
    docs = render(values={"networkPolicy": {"enabled": True}})
    ports = [r["ports"][0]["port"] for r in one(docs, "NetworkPolicy")["spec"]["ingress"]]
    assert ports == [50001, 8080]
