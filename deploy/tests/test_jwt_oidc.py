"""JWT-SVIDs and OIDC discovery: off by default; when on, the values reach `sigil serve`
as flags it has, the OIDC certificate is mounted from its Secret, the OIDC port gets a
Service of its own, and combinations Sigil would refuse at start fail the render."""

import pytest

from conftest import find, helm_template, one
from test_manifests import args_map, container, serve_flags

OIDC_TLS_DIR = "/var/run/sigil/oidc-tls"

JWT = {"enabled": True, "signingAlgorithm": "ES256", "issuer": "https://issuer.example/sentry",
       "keyID": "key-1", "ttl": "1h"}
OIDC_TLS = {"enabled": True, "server": {"port": 9443}, "pathPrefix": "/sentry",
            "jwksURI": "https://issuer.example/sentry/jwks.json",
            "allowedHosts": ["issuer.example", "issuer.internal"],
            "tls": {"secretName": "sigil-oidc-cert"}}
OIDC_PLAIN = {"enabled": True, "tls": {"enabled": False}, "allowedHosts": ["issuer.example"]}


def jwt_oidc_args(docs: list) -> list:
    return [a for a in container(docs)["args"] if a.startswith(("--jwt", "--jwks", "--oidc"))]


def pod(docs: list) -> dict:
    return one(docs, "Deployment", "dapr-sentry")["spec"]["template"]["spec"]


def port_names(c: dict) -> set:
    return {p["name"] for p in c["ports"]}


def test_defaults_have_no_jwt_or_oidc(shipped, render):
    for docs in (shipped, render()):
        assert jwt_oidc_args(docs) == []
        assert "oidc" not in port_names(container(docs))
        assert [s["metadata"]["name"] for s in find(docs, "Service")] == ["dapr-sentry"]
        assert "oidc" not in {p["name"] for p in one(docs, "Service")["spec"]["ports"]}
        assert [v["name"] for v in pod(docs)["volumes"]] == ["tmp"]
        assert [m["name"] for m in container(docs)["volumeMounts"]] == ["tmp"]


def test_jwt_values_reach_the_flags(render):
    docs = render(values={"jwt": JWT})
    assert jwt_oidc_args(docs) == [
        "--jwt-enabled",
        "--jwt-signing-algorithm=ES256",
        "--jwt-issuer=https://issuer.example/sentry",
        "--jwt-key-id=key-1",
        "--jwt-ttl=1h",
    ]
    # The key and the JWKS are in the Secret dapr-trust-bundle, read through the API.
    assert [v["name"] for v in pod(docs)["volumes"]] == ["tmp"]
    assert "oidc" not in port_names(container(docs))
    assert find(docs, "Service", "dapr-sentry-oidc") == []


def test_empty_jwt_values_pass_no_flags(render):
    assert jwt_oidc_args(render(values={"jwt": {"enabled": True}})) == ["--jwt-enabled"]


def test_jwt_values_while_off_pass_nothing(render):
    # Sigil refuses --jwt-issuer and friends without --jwt-enabled.
    docs = render(values={"jwt": dict(JWT, enabled=False)})
    assert jwt_oidc_args(docs) == []


def test_oidc_with_tls(render):
    docs = render(values={"jwt": {"enabled": True}, "oidc": OIDC_TLS})
    a = args_map(docs)
    assert "--oidc-enabled" in a and a["--oidc-enabled"] == ""
    assert a["--oidc-server-listen-address"] == "0.0.0.0"
    assert a["--oidc-server-listen-port"] == "9443"
    assert a["--oidc-path-prefix"] == "/sentry"
    assert a["--oidc-jwks-uri"] == "https://issuer.example/sentry/jwks.json"
    assert a["--oidc-allowed-hosts"] == "issuer.example,issuer.internal"
    assert a["--oidc-server-tls-cert-file"] == f"{OIDC_TLS_DIR}/tls.crt"
    assert a["--oidc-server-tls-key-file"] == f"{OIDC_TLS_DIR}/tls.key"
    assert "--oidc-server-tls-enabled" not in a

    c = container(docs)
    mount = next(m for m in c["volumeMounts"] if m["name"] == "oidc-tls")
    assert mount["mountPath"] == OIDC_TLS_DIR and mount["readOnly"] is True
    # A subPath mount would never see a renewed certificate.
    assert all("subPath" not in m for m in c["volumeMounts"])
    volume = next(v for v in pod(docs)["volumes"] if v["name"] == "oidc-tls")
    assert volume["secret"]["secretName"] == "sigil-oidc-cert"
    assert {i["key"]: i["path"] for i in volume["secret"]["items"]} == {
        "tls.crt": "tls.crt", "tls.key": "tls.key"}

    oidc_port = next(p for p in c["ports"] if p["name"] == "oidc")
    assert oidc_port == {"name": "oidc", "containerPort": 9443, "protocol": "TCP"}
    svc = one(docs, "Service", "dapr-sentry-oidc")
    assert svc["metadata"]["namespace"] == "dapr-system"
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"] == [{"name": "oidc", "port": 9443, "targetPort": "oidc",
                                     "protocol": "TCP", "appProtocol": "https"}]
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    # dapr-sentry, which sidecars dial, does not carry the OIDC port.
    assert "oidc" not in {p["name"] for p in one(docs, "Service", "dapr-sentry")["spec"]["ports"]}


def test_oidc_defaults_with_tls(render):
    docs = render(values={"jwt": {"enabled": True, "issuer": "https://issuer.example"},
                          "oidc": {"enabled": True, "tls": {"secretName": "cert"}}})
    assert jwt_oidc_args(docs) == [
        "--jwt-enabled",
        "--jwt-issuer=https://issuer.example",
        "--oidc-enabled",
        "--oidc-server-listen-address=0.0.0.0",
        "--oidc-server-listen-port=9080",
        f"--oidc-server-tls-cert-file={OIDC_TLS_DIR}/tls.crt",
        f"--oidc-server-tls-key-file={OIDC_TLS_DIR}/tls.key",
    ]
    assert one(docs, "Service", "dapr-sentry-oidc")["spec"]["ports"][0]["port"] == 9080


def test_oidc_plain_http(render):
    docs = render(values={"jwt": {"enabled": True}, "oidc": OIDC_PLAIN})
    a = args_map(docs)
    assert a["--oidc-server-tls-enabled"] == "false"
    assert "--oidc-server-tls-cert-file" not in a and "--oidc-server-tls-key-file" not in a
    assert [v["name"] for v in pod(docs)["volumes"]] == ["tmp"]
    assert [m["name"] for m in container(docs)["volumeMounts"]] == ["tmp"]
    assert "oidc" in port_names(container(docs))
    svc = one(docs, "Service", "dapr-sentry-oidc")
    assert svc["spec"]["ports"][0]["appProtocol"] == "http"


@pytest.mark.parametrize("values", [{"jwt": JWT}, {"jwt": JWT, "oidc": OIDC_TLS},
                                    {"jwt": {"enabled": True}, "oidc": OIDC_PLAIN}])
def test_jwt_and_oidc_flags_exist_in_sigil(render, values):
    known = serve_flags()
    args = jwt_oidc_args(render(values=values))
    assert args
    for a in args:
        assert a[2:].partition("=")[0] in known, f"sigil serve has no flag {a}"
    # Bare switches, as Dapr's chart passes them (`sigil serve` also reads `=true`/`=false`
    # as Go does, but the chart keeps one spelling).
    assert not [a for a in args if a.startswith(("--jwt-enabled=", "--oidc-enabled="))]


@pytest.mark.parametrize("values, message", [
    ({"oidc": {"enabled": True, "tls": {"secretName": "cert"}}},
     "oidc.enabled needs jwt.enabled"),
    ({"jwt": {"enabled": True}, "oidc": {"enabled": True, "tls": {"secretName": "cert"}}},
     "oidc.enabled needs jwt.issuer (a fixed issuer URL) or oidc.allowedHosts"),
    ({"jwt": {"enabled": True}, "oidc": {"enabled": True, "allowedHosts": ["a.example"]}},
     "oidc.enabled serves HTTPS by default and needs oidc.tls.secretName"),
    ({"jwt": {"enabled": True},
      "oidc": {"enabled": True, "allowedHosts": ["a.example"], "tls": {"enabled": True}}},
     "oidc.enabled serves HTTPS by default and needs oidc.tls.secretName"),
    ({"jwt": {"enabled": True},
      "oidc": {"enabled": True, "allowedHosts": ["a.example"],
               "tls": {"enabled": False, "secretName": "cert"}}},
     "oidc.tls.secretName is set but oidc.tls.enabled is false"),
    # Spellings Helm would otherwise ignore without a word.
    ({"jwt": {"enabled": True, "keyId": "k"}}, "the key id is jwt.keyID"),
    ({"oidc": {"port": 9443}}, "the OIDC port is oidc.server.port"),
])
def test_refused_combinations_fail_the_render(values, message):
    result = helm_template(values=values, check=False)
    assert result.returncode != 0, result.stdout
    assert message in result.stderr, result.stderr


def test_tls_enabled_false_given_as_set_string():
    # `--set oidc.tls.enabled=false` is a boolean; `--set-string` and quoted YAML give a
    # string, which must mean the same.
    result = helm_template(sets=["jwt.enabled=true", "oidc.enabled=true",
                                 "oidc.allowedHosts={issuer.example}"],
                           values={"oidc": {"tls": {"enabled": "false"}}})
    assert "--oidc-server-tls-enabled=false" in result.stdout
