"""TLS for outside traffic, checked statically (the proxy itself runs for real in
tests/integration/test_tls_proxy.py): the compose profile `tls` with docker-compose.tls.yml, and the k8s Ingress.
"""

from __future__ import annotations

import re
import shutil

import pytest

from tests.support.k8s import K8S, example_secrets, kustomize, one
from tests.support.compose import ROOT, STACKS, render

TLS_OVERRIDE = "docker-compose.tls.yml"
PROFILES = {"vllm": "vllm,tls", "ollama": "cpu,tls"}


def tls_render(stack: str, environ: dict[str, str] | None = None, override: bool = True) -> dict:
    files, env_file = STACKS[stack]
    return render(list(files) + ([TLS_OVERRIDE] if override else []), env_file, {"COMPOSE_PROFILES": PROFILES[stack], **(environ or {})})


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_with_tls_only_the_proxy_is_published_and_the_backend_stays_inside(stack):
    services = tls_render(stack)["services"]
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert set(published) == {"tls-proxy"}, "with docker-compose.tls.yml the backend has no host port"
    assert {(p["published"], p["target"]) for p in published["tls-proxy"]} == {("443", 8443), ("80", 8080)}
    proxy = services["tls-proxy"]
    assert proxy["depends_on"]["backend"]["condition"] == "service_healthy"
    assert proxy["read_only"] is True and proxy["restart"] == "unless-stopped"
    assert proxy["deploy"]["resources"]["limits"]["memory"]
    assert proxy["healthcheck"]["test"][:2] == ["CMD", "wget"]
    # Without the override the profile still works, the backend then also on its (loopback) port.
    plain = tls_render(stack, override=False)["services"]
    assert plain["backend"]["ports"][0]["host_ip"] == "127.0.0.1"
    # And without the profile there is no proxy.
    files, env_file = STACKS[stack]
    assert "tls-proxy" not in render(list(files), env_file)["services"]


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_the_proxy_gets_the_backends_upload_limit_its_certificates_and_its_template(stack):
    proxy = tls_render(stack, {"MAX_UPLOAD_MB": "120", "HTTPS_PORT": "8443", "TLS_CERT_DIR": "/srv/certs"})["services"]["tls-proxy"]
    environment = proxy["environment"]
    assert environment["MAX_UPLOAD_MB"] == "120" and environment["HTTPS_PORT"] == "8443"
    assert environment["NGINX_ENVSUBST_FILTER"] == "^TLS_"
    mounts = {v["target"]: v for v in proxy["volumes"]}
    assert mounts["/etc/nginx/certs"]["source"] == "/srv/certs" and mounts["/etc/nginx/certs"]["read_only"]
    template = mounts["/etc/nginx/templates/nginx.conf.template"]["source"]
    assert template == str(ROOT / "compose/tls/nginx.conf.template")
    assert mounts["/docker-entrypoint.d/15-tls-env.envsh"]["source"] == str(ROOT / "compose/tls/tls-env.envsh")
    # The command runs the rendered file (in the tmpfs conf.d), not the image's default config.
    assert proxy["command"][:3] == ["nginx", "-c", "/etc/nginx/conf.d/nginx.conf"]
    assert {t.split(":")[0] for t in proxy["tmpfs"]} >= {"/tmp", "/etc/nginx/conf.d"}
    published = {p["target"]: p["published"] for p in proxy["ports"]}
    assert published[8443] == "8443"
    config = (ROOT / "compose/tls/nginx.conf.template").read_text()
    assert "proxy_buffering off;" in config and "client_max_body_size ${TLS_CLIENT_MAX_BODY};" in config


def test_the_ingress_terminates_tls_for_the_backend(tmp_path):
    tree = tmp_path / "k8s"
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("secrets.env"))
    (tree / "base/secrets.env").write_text("".join(f"{k}=test-only-0000000000\n" for k in example_secrets()))
    for overlay in ("single-gpu", "multi-gpu"):
        docs = kustomize(tree / "overlays" / overlay)
        ingress = one(docs, "Ingress", "backend")
        spec = ingress["spec"]
        (tls,) = spec["tls"]
        (rule,) = spec["rules"]
        assert tls["secretName"] == "rag-tls" and tls["hosts"] == [rule["host"]] == ["rag.example.com"]
        service = rule["http"]["paths"][0]["backend"]["service"]
        assert service["name"] == "backend" and one(docs, "Service", "backend")
        assert service["port"]["name"] in [p["name"] for p in one(docs, "Service", "backend")["spec"]["ports"]]
        annotations = ingress["metadata"]["annotations"]
        assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
        assert annotations["nginx.ingress.kubernetes.io/force-ssl-redirect"] == "true"
        config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("backend-config"))
        limit_kib = float(config["data"]["MAX_UPLOAD_MB"]) * 1024 + 64
        assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == f"{limit_kib:.0f}k", "MAX_UPLOAD_MB + 64 KiB"
        assert "cert-manager.io/cluster-issuer" not in annotations
        assert not [d for d in docs if d["metadata"]["name"] == "ingress-config"], "local-config: never applied"

    # The host and the Secret's name are the overlay's two literals; cert-manager is one component away.
    kustomization = tree / "overlays/single-gpu/kustomization.yaml"
    text = kustomization.read_text().replace("HOST=rag.example.com", "HOST=docs.internal.example").replace(
        "TLS_SECRET_NAME=rag-tls", "TLS_SECRET_NAME=docs-tls")
    text = re.sub(r"^# components:\n#   - (\S+)", r"components:\n  - \1", text, flags=re.M)
    kustomization.write_text(text)
    ingress = one(kustomize(tree / "overlays/single-gpu"), "Ingress", "backend")
    assert ingress["spec"]["tls"] == [{"hosts": ["docs.internal.example"], "secretName": "docs-tls"}]
    assert ingress["spec"]["rules"][0]["host"] == "docs.internal.example"
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt-prod"
