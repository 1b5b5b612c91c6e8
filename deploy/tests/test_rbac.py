"""Sigil's RBAC is least privilege: fail on any grant beyond the list below.

The list is the whole of what Sigil may do in the API:
- cluster-wide: create TokenReviews; get pods; get Dapr Configurations;
- in its own namespace, on the Secret and the ConfigMap `dapr-trust-bundle` only:
  get/update. Never `create` (it cannot be limited by name; the chart creates both
  objects), never `delete`, and no list/watch/patch, which Sigil never calls;
- only with `podCertificates.signerName` set (the PodCertificateRequest signer), cluster-wide:
  get/list/watch podcertificaterequests, update podcertificaterequests/status, get nodes and
  serviceaccounts (each compared by UID with the request), `sign` and `attest` on
  certificates.k8s.io signers limited to that one signer name, create
  clustertrustbundles, and get/update only on its own bundle `<signer, / as :>:trust-anchors`.
"""

import copy

import pytest

from conftest import find

TRUST_BUNDLE = "dapr-trust-bundle"
SERVICE_ACCOUNT = "dapr-sentry"

# (apiGroup, resource) -> allowed verbs, for the ClusterRole.
CLUSTER_ALLOWED = {
    ("authentication.k8s.io", "tokenreviews"): {"create"},
    ("", "pods"): {"get"},
    ("dapr.io", "configurations"): {"get"},
}
# Added to the ClusterRole only when podCertificates.signerName is set.
SIGNER = "sigil.example.com/spiffe"
POD_CERTIFICATES_ALLOWED = {
    ("certificates.k8s.io", "podcertificaterequests"): {"get", "list", "watch"},
    ("certificates.k8s.io", "podcertificaterequests/status"): {"update"},
    ("certificates.k8s.io", "signers"): {"sign", "attest"},
    ("", "nodes"): {"get"},
    ("", "serviceaccounts"): {"get"},
    ("certificates.k8s.io", "clustertrustbundles"): {"create", "get", "update"},
}
BUNDLE = SIGNER.replace("/", ":") + ":trust-anchors"
# For the namespaced Role: every rule must name only the trust bundle.
NAMESPACE_ALLOWED = {
    ("", "secrets"): {"get", "update"},
    ("", "configmaps"): {"get", "update"},
}
RBAC_KINDS = {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}


def grants(rule: dict):
    """Every (group, resource, verb) a rule grants."""
    for group in rule.get("apiGroups", []):
        for resource in rule.get("resources", []):
            for verb in rule.get("verbs", []):
                yield group, resource, verb


def cluster_allowed(signer: str | None) -> dict:
    if signer is None:
        return CLUSTER_ALLOWED
    return {**CLUSTER_ALLOWED, **POD_CERTIFICATES_ALLOWED}


def rbac_violations(docs: list, namespace: str, signer: str | None = None) -> list:
    """Everything in `docs` that grants more than the allowed list (with the signer's
    grants when `signer` is given), or grants it to someone other than Sigil's service
    account."""
    problems = []
    roles = {}
    for d in docs:
        kind, name = d["kind"], d["metadata"]["name"]
        if kind not in ("Role", "ClusterRole"):
            continue
        roles[(kind, name)] = d
        where = f"{kind} {name}"
        if kind == "Role" and d["metadata"].get("namespace") != namespace:
            problems.append(f"{where}: not in namespace {namespace}")
        if "aggregationRule" in d:
            problems.append(f"{where}: aggregationRule pulls in other roles' rules")
        allowed = cluster_allowed(signer) if kind == "ClusterRole" else NAMESPACE_ALLOWED
        for i, rule in enumerate(d.get("rules") or []):
            at = f"{where} rule {i}"
            if rule.get("nonResourceURLs"):
                problems.append(f"{at}: nonResourceURLs {rule['nonResourceURLs']}")
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                if "*" in (rule.get(field) or []):
                    problems.append(f"{at}: wildcard in {field}")
            names = rule.get("resourceNames") or []
            if kind == "Role" and (not names or set(names) != {TRUST_BUNDLE}):
                problems.append(f"{at}: must be limited to resourceNames [{TRUST_BUNDLE}], has {names}")
            if "signers" in (rule.get("resources") or []) and names != [signer]:
                problems.append(f"{at}: signers must be limited to resourceNames [{signer}], has {names}")
            bundle = (signer or "").replace("/", ":") + ":trust-anchors"
            if ("clustertrustbundles" in (rule.get("resources") or [])
                    and set(rule.get("verbs") or []) & {"get", "update", "patch", "delete"}
                    and names != [bundle]):
                problems.append(f"{at}: clustertrustbundles must be limited to resourceNames [{bundle}], has {names}")
            for group, resource, verb in grants(rule):
                if verb not in allowed.get((group, resource), set()):
                    problems.append(f"{at}: grants {verb} on {group or 'core'}/{resource}")

    for d in docs:
        kind, name = d["kind"], d["metadata"]["name"]
        if kind not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        where = f"{kind} {name}"
        ref = d.get("roleRef", {})
        want_kind = "ClusterRole" if kind == "ClusterRoleBinding" else "Role"
        if ref.get("kind") != want_kind:
            problems.append(f"{where}: binds a {ref.get('kind')}, expected a {want_kind}")
        elif (ref.get("kind"), ref.get("name")) not in roles:
            problems.append(f"{where}: binds {ref.get('kind')} {ref.get('name')}, which the chart does not define")
        if kind == "RoleBinding" and d["metadata"].get("namespace") != namespace:
            problems.append(f"{where}: not in namespace {namespace}")
        subjects = d.get("subjects") or []
        expected = [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": namespace}]
        if subjects != expected:
            problems.append(f"{where}: subjects {subjects}, expected only {expected}")
    return problems


def granted(docs: list) -> set:
    out = set()
    for d in docs:
        if d["kind"] in ("Role", "ClusterRole"):
            for rule in d.get("rules") or []:
                out.update((d["kind"],) + g for g in grants(rule))
    return out


def needed(signer: str | None = None) -> set:
    out = set()
    for kind, table in (("ClusterRole", cluster_allowed(signer)), ("Role", NAMESPACE_ALLOWED)):
        for (group, resource), verbs in table.items():
            out.update((kind, group, resource, v) for v in verbs)
    return out


def test_shipped_manifests_grant_nothing_beyond_the_list(shipped):
    assert rbac_violations(shipped, "dapr-system") == []


def test_shipped_manifests_grant_what_sigil_needs(shipped):
    # Less would break Sigil at run time: the list is exact, not only an upper bound.
    assert granted(shipped) == needed()


def test_shipped_rbac_objects(shipped):
    kinds = sorted(d["kind"] for d in shipped if d["kind"] in RBAC_KINDS)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]


@pytest.mark.parametrize("namespace", ["dapr-system", "other-ns"])
def test_rendered_rbac_follows_the_release_namespace(render, namespace):
    docs = render(namespace=namespace, release="rel")
    assert rbac_violations(docs, namespace) == []
    assert granted(docs) == needed()
    # Cluster-scoped names carry the namespace: two installs never share a ClusterRole.
    cluster_role = find(docs, "ClusterRole")[0]["metadata"]["name"]
    assert namespace in cluster_role


def test_jwt_and_oidc_need_no_more_rbac(render):
    # In kubernetes mode the JWT key and JWKS go into the Secret dapr-trust-bundle and the
    # public JWKS into the ConfigMap (get, then update): what the Role already grants.
    docs = render(values={"jwt": {"enabled": True},
                          "oidc": {"enabled": True, "allowedHosts": ["issuer.example"],
                                   "tls": {"secretName": "oidc-cert"}}})
    assert rbac_violations(docs, "dapr-system") == []
    assert granted(docs) == needed()
    for resource in ("secrets", "configmaps"):
        assert {("Role", "", resource, verb) for verb in ("get", "update")} <= granted(docs)


def test_rbac_does_not_depend_on_values(render):
    # Values that change other objects must not widen or narrow RBAC.
    docs = render(values={
        "replicaCount": 1, "metrics": {"enabled": False},
        "daprConfiguration": {"create": True},
        "tls": {"root": {"certPEM": "r"}, "issuer": {"certPEM": "c", "keyPEM": "k"}},
    })
    assert rbac_violations(docs, "dapr-system") == []
    assert granted(docs) == needed()


def test_pod_certificate_signer_grants_exactly_its_rbac(render):
    docs = render(values={"podCertificates": {"signerName": SIGNER}})
    assert rbac_violations(docs, "dapr-system", signer=SIGNER) == []
    assert granted(docs) == needed(signer=SIGNER)
    # Without the signer the same grants are violations.
    assert rbac_violations(docs, "dapr-system") != []
    # And the Deployment passes the flag.
    args = find(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--pod-certificate-signer={SIGNER}" in args


def test_pod_certificate_signer_off_by_default(render):
    docs = render()
    args = find(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not any(a.startswith("--pod-certificate-signer") for a in args)
    assert granted(docs) == needed()


def test_shipped_pod_certificates_manifest(shipped_pod_certificates):
    assert rbac_violations(shipped_pod_certificates, "dapr-system", signer=SIGNER) == []
    assert granted(shipped_pod_certificates) == needed(signer=SIGNER)


def test_checker_catches_a_signer_grant_for_any_name(render):
    docs = render(values={"podCertificates": {"signerName": SIGNER}})
    role = find(docs, "ClusterRole")[0]
    signers = next(r for r in role["rules"] if "signers" in r["resources"])
    signers.pop("resourceNames")
    problems = rbac_violations(docs, "dapr-system", signer=SIGNER)
    assert any("signers must be limited" in p for p in problems), problems


def test_checker_catches_updates_of_any_trust_bundle(render):
    docs = render(values={"podCertificates": {"signerName": SIGNER}})
    role = find(docs, "ClusterRole")[0]
    rule = next(r for r in role["rules"] if r.get("resourceNames") == [BUNDLE])
    rule.pop("resourceNames")
    problems = rbac_violations(docs, "dapr-system", signer=SIGNER)
    assert any("clustertrustbundles must be limited" in p for p in problems), problems


# The checker itself must catch what it is there to catch.

def mutate(docs: list, kind: str, change) -> list:
    docs = copy.deepcopy(docs)
    change(next(d for d in docs if d["kind"] == kind))
    return docs


@pytest.mark.parametrize("kind,change,expect", [
    ("ClusterRole", lambda d: d["rules"][1]["verbs"].append("list"), "grants list on core/pods"),
    ("ClusterRole", lambda d: d["rules"].append(
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}), "grants get on core/secrets"),
    ("ClusterRole", lambda d: d["rules"][0].update(verbs=["*"]), "wildcard in verbs"),
    ("ClusterRole", lambda d: d["rules"].append(
        {"nonResourceURLs": ["/metrics"], "verbs": ["get"]}), "nonResourceURLs"),
    ("ClusterRole", lambda d: d.update(aggregationRule={"clusterRoleSelectors": []}), "aggregationRule"),
    ("ClusterRole", lambda d: d["rules"][1]["resources"].append("pods/exec"), "core/pods/exec"),
    ("Role", lambda d: d["rules"][0].pop("resourceNames"), "must be limited to resourceNames"),
    ("Role", lambda d: d["rules"][0]["resourceNames"].append("other"), "must be limited to resourceNames"),
    ("Role", lambda d: d["rules"][0]["verbs"].append("create"), "grants create on core/secrets"),
    ("Role", lambda d: d["rules"][0]["verbs"].append("delete"), "grants delete on core/configmaps"),
    ("Role", lambda d: d["rules"][0]["resources"].append("serviceaccounts"), "core/serviceaccounts"),
    ("Role", lambda d: d["metadata"].update(namespace="kube-system"), "not in namespace"),
    ("RoleBinding", lambda d: d["subjects"].append(
        {"kind": "Group", "name": "system:authenticated"}), "subjects"),
    ("ClusterRoleBinding", lambda d: d["roleRef"].update(name="cluster-admin"), "does not define"),
    ("RoleBinding", lambda d: d["roleRef"].update(kind="ClusterRole"), "expected a Role"),
])
def test_checker_catches_widened_rbac(shipped, kind, change, expect):
    problems = rbac_violations(mutate(shipped, kind, change), "dapr-system")
    assert any(expect in p for p in problems), problems
