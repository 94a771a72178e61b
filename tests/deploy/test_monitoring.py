"""The `monitoring` compose profile (Prometheus + Grafana), checked without a Docker engine.

What fails here: a stack that does not render with the profile, an unpinned or unpublished-on-loopback
monitoring service, a mounted file that does not exist, a healthcheck its image cannot run (or that does not
work), a scrape target that names no service or port of the stack, an entrypoint that writes the scrape key or
the vLLM target somewhere other than where prometheus.yml reads them, a PromQL expression that does not parse
(promql-parser, a port of Prometheus' own parser; `promtool` too where one is installed), a dashboard panel
without datasource or query, and any metric name that neither the backend nor vLLM 0.32 exports.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from backend.settings import Settings
from tests.support.compose import PINNED_TAG, ROOT, STACKS, compose, read_env_file, render, stack_render
from tests.support.healthchecks import executables, run_check

MONITORING = ROOT / "monitoring"
PROMETHEUS_DIR = MONITORING / "prometheus"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "rag-appliance.json"
DATASOURCES = MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = MONITORING / "grafana" / "provisioning" / "dashboards" / "rag-appliance.yml"
VLLM_METRICS_FILE = MONITORING / "vllm-0.32.0-metrics.txt"
ENGINE_PROFILE = {"vllm": "vllm", "ollama": "cpu"}

# The backend's metrics (backend/observability/metrics.py), by type: the only rag_* names the dashboard and the
# alerts may use. This list is checked here against the queries only; tests/integration checks that a running
# backend really exports every one of them on GET /metrics.
RAG_METRICS = {
    "rag_http_requests_total": "counter",
    "rag_http_request_duration_seconds": "histogram",
    "rag_http_requests_in_flight": "gauge",
    "rag_stage_duration_seconds": "histogram",
    "rag_errors_total": "counter",
    "rag_empty_retrievals_total": "counter",
    "rag_context_chunks_dropped_total": "counter",
    "rag_context_tokens_dropped_total": "counter",
    "rag_llm_tokens_total": "counter",
    "rag_documents_ingested_total": "counter",
    "rag_info": "gauge",
    "rag_embed_worker_crashes_total": "counter",
    "rag_answers_in_flight": "gauge",
    "rag_answers_queued": "gauge",
    "rag_answers_limit": "gauge",
    "rag_answers_shed_total": "counter",
    "rag_engine_requests_waiting": "gauge",
    "rag_event_loop_lag_seconds": "histogram",
    "rag_citation_sentences_total": "counter",
    "rag_citation_check_duration_seconds": "histogram",
    "rag_answers_ungrounded_total": "counter",
}
RAG_STAGES = {"parse", "embed", "store_write", "retrieval_wait", "query_embed", "search", "rerank", "retrieval", "ttft", "generation", "total"}
# prometheus_client's process collector (the backend's; vLLM exports these too, so queries pick job="backend").
PROCESS_METRICS = {"process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds"}
# Series Prometheus makes itself.
PROMETHEUS_SERIES = {"up", "ALERTS"}

# Executables of the two images, read from their Dockerfiles at the pinned tags:
# prom/prometheus v3.14.0: FROM quay.io/prometheus/busybox (busybox applets: sh, wget, ...), adds
#   /bin/prometheus and /bin/promtool; runs as `nobody`.
# grafana/grafana 12.3.1: FROM alpine (busybox: sh, wget), `apk add ca-certificates bash curl tzdata`; uid 472.
MONITORING_IMAGE_TOOLS = {
    "prom/prometheus": {"sh", "/bin/sh", "wget", "prometheus", "/bin/prometheus", "promtool"},
    "grafana/grafana": {"sh", "bash", "curl", "wget"},
}

# A different valid value for each (commented) knob of the env files' Monitoring section: each must change
# the rendered stack. A new knob there needs its line here.
MONITORING_KNOBS = {
    "METRICS_API_KEY": "ops-0123456789abcdef",
    "VLLM_METRICS_TARGET": "gpu-pool.internal:8001",
    "MONITORING_BIND": "0.0.0.0",
    "PROMETHEUS_PORT": "9091",
    "GRAFANA_PORT": "3001",
    "GRAFANA_ADMIN_USER": "ops",
    "GRAFANA_ADMIN_PASSWORD": "a-long-password",
    "GRAFANA_ANONYMOUS_ENABLED": "true",
    "PROMETHEUS_RETENTION": "30d",
    "MEM_LIMIT_PROMETHEUS": "4g",
    "MEM_LIMIT_GRAFANA": "2g",
}
COMMENTED_KNOB = re.compile(r"^# ([A-Z][A-Z0-9_]*)=(.*)$")


# --- helpers -----------------------------------------------------------------------------------------------

def monitored(stack: str, environ: dict[str, str] | None = None) -> dict:
    """The stack with its engine and the monitoring profile, as `up` would run it."""
    return stack_render(stack, {"COMPOSE_PROFILES": f"{ENGINE_PROFILE[stack]},monitoring", **(environ or {})})


def prometheus_config() -> dict:
    return yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"] for rule in group["rules"]]


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> list[dict]:
    panels = []
    for panel in dashboard()["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # panels of collapsed rows
    return [p for p in panels if p["type"] != "row"]


def grafana_expr(expr: str) -> str:
    """A dashboard query as Grafana sends it: its interval variables replaced by durations."""
    return re.sub(r"\$__(rate_interval|interval|range)\b", "1m", expr)


def all_expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every alert rule and every dashboard query."""
    found = [(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]
    for panel in dashboard_panels():
        found += [(f"panel {panel['title']!r} {t['refId']}", grafana_expr(t["expr"])) for t in panel["targets"]]
    return found


def vllm_metric_names() -> set[str]:
    """Sample names vLLM 0.32.0 exports, from its TYPE lines (captured from a real server)."""
    names = set()
    for line in VLLM_METRICS_FILE.read_text().splitlines():
        match = re.match(r"^# TYPE (vllm:\S+) (\w+)$", line)
        if match:
            names |= sample_names(match.group(1), match.group(2))
    return names


def sample_names(family: str, kind: str) -> set[str]:
    if kind == "histogram":
        return {f"{family}_bucket", f"{family}_sum", f"{family}_count"}
    return {family}


def selectors(expr: str) -> list:
    promql = pytest.importorskip("promql_parser", reason="promql-parser (test extra) validates the PromQL")
    found = []

    def visit(node):
        if isinstance(node, promql.VectorSelector):
            found.append(node)

    promql.walk(promql.parse(expr), pre_visit=visit)
    return found


def service_ports(project: dict) -> dict[str, int]:
    """The port each HTTP service of the rendered stack listens on inside the network."""
    ports = {}
    services = project["services"]
    if "backend" in services:
        ports["backend"] = int(services["backend"]["environment"]["PORT"])
    if "vllm" in services:
        command = services["vllm"]["command"]
        ports["vllm"] = int(command[command.index("--port") + 1])
    for name, port in (("prometheus", 9090), ("grafana", 3000)):
        if name in services:
            ports[name] = port
    return ports


def entrypoint_runtime_dir() -> str:
    match = re.search(r'RUNTIME_DIR="\$\{PROMETHEUS_RUNTIME_DIR:-([^}]+)\}"', (PROMETHEUS_DIR / "entrypoint.sh").read_text())
    assert match, "entrypoint.sh must set RUNTIME_DIR from PROMETHEUS_RUNTIME_DIR with a default"
    return match.group(1)


def run_entrypoint(tmp_path: Path, environ: dict[str, str], shell: tuple[str, ...] = ("sh",)) -> subprocess.CompletedProcess:
    """Run entrypoint.sh here, with the runtime dir in tmp_path and a stand-in for /bin/prometheus."""
    fake = tmp_path / "prometheus"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$PROMETHEUS_RUNTIME_DIR/args"\n')
    fake.chmod(0o755)
    env = {"PATH": os.environ["PATH"], "PROMETHEUS_RUNTIME_DIR": str(tmp_path / "run"), "PROMETHEUS_BIN": str(fake), **environ}
    args = monitored("vllm")["services"]["prometheus"]["command"]
    return subprocess.run([*shell, str(PROMETHEUS_DIR / "entrypoint.sh"), *args], env=env, capture_output=True, text=True, timeout=30)


def env_file_monitoring_knobs(stack: str) -> dict[str, str]:
    """The commented `# NAME=value` knobs of the env file's Monitoring section."""
    text = (ROOT / STACKS[stack][1]).read_text()
    section = text[text.index("# --- Monitoring"):]
    return {m.group(1): m.group(2) for m in map(COMMENTED_KNOB.match, section.splitlines()) if m}


# --- compose -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stack", sorted(STACKS))
def test_the_profile_adds_prometheus_and_grafana(stack):
    files, env = STACKS[stack]

    def services_with(*profiles: str) -> set[str]:
        args = [a for f in files for a in ("-f", f)] + [a for p in profiles for a in ("--profile", p)]
        done = compose(args + ["config", "--format", "json"], ROOT / env)
        assert done.returncode == 0, done.stderr
        return set(json.loads(done.stdout)["services"])

    engine = {"vllm": {"vllm"}, "ollama": {"ollama", "ollama-pull"}}[stack]
    # The command of docs/monitoring.md: the engine's profile and `monitoring`, both on the command line...
    assert services_with(ENGINE_PROFILE[stack], "monitoring") == {"qdrant", "backend", "prometheus", "grafana"} | engine
    # ...because a --profile flag replaces the env file's COMPOSE_PROFILES (the pitfall docs/monitoring.md names).
    assert services_with("monitoring") == {"qdrant", "backend", "prometheus", "grafana"}
    # Or both in COMPOSE_PROFILES
    assert set(monitored(stack)["services"]) == {"qdrant", "backend", "prometheus", "grafana"} | engine
    assert not {"prometheus", "grafana"} & set(stack_render(stack)["services"]), "monitoring must stay opt-in"


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_monitoring_services_are_pinned_limited_and_logged_like_the_rest(stack):
    services = monitored(stack)["services"]
    for name in ("prometheus", "grafana"):
        service = services[name]
        assert PINNED_TAG.match(service["image"]), f"{name}: {service['image']} is not pinned"
        assert service["profiles"] == ["monitoring"]
        assert service["restart"] == "unless-stopped"
        assert service["deploy"]["resources"]["limits"]["memory"], name
        assert service["logging"] == services["backend"]["logging"], f"{name}: not the stack's logging block"
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_ports_are_on_loopback_unless_opened(stack):
    services = monitored(stack)["services"]
    for name, port in (("prometheus", 9090), ("grafana", 3000)):
        (published,) = services[name]["ports"]
        assert (published["host_ip"], published["published"], published["target"]) == ("127.0.0.1", str(port), port)
    opened = monitored(stack, {"MONITORING_BIND": "0.0.0.0", "PROMETHEUS_PORT": "9091", "GRAFANA_PORT": "3001"})["services"]
    assert [(p["host_ip"], p["published"]) for p in opened["prometheus"]["ports"]] == [("0.0.0.0", "9091")]
    assert [(p["host_ip"], p["published"]) for p in opened["grafana"]["ports"]] == [("0.0.0.0", "3001")]
    assert services["backend"]["ports"][0]["host_ip"] == "127.0.0.1"


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_mounted_files_exist_and_data_lives_in_named_volumes(stack):
    project = monitored(stack)
    services = project["services"]
    mounts = {}
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            if volume["type"] == "bind":
                source = Path(volume["source"])
                assert source.exists(), f"{name}: {source} is mounted but does not exist"
                assert source.resolve().is_relative_to(MONITORING.resolve()), f"{name}: mounts {source} from outside monitoring/"
                assert volume.get("read_only"), f"{name}: {volume['target']} should be read-only"
            mounts[(name, volume["target"])] = volume
    # Data in the stack's named volumes, not in the containers
    assert mounts[("prometheus", "/prometheus")]["type"] == "volume"
    assert mounts[("grafana", "/var/lib/grafana")]["type"] == "volume"
    assert {"prometheus", "grafana"} <= set(project["volumes"])
    # What the containers expect under the mounts
    etc = Path(mounts[("prometheus", "/etc/prometheus")]["source"])
    assert services["prometheus"]["entrypoint"] == ["/bin/sh", "/etc/prometheus/entrypoint.sh"]
    for flag in services["prometheus"]["command"]:
        if flag.startswith("--config.file="):
            assert (etc / Path(flag.split("=", 1)[1]).relative_to("/etc/prometheus")).is_file()
    assert (etc / "entrypoint.sh").is_file() and (etc / "alerts.yml").is_file()
    grafana = {target: Path(v["source"]) for (name, target), v in mounts.items() if name == "grafana" and v["type"] == "bind"}
    assert grafana["/etc/grafana/provisioning/datasources"] == DATASOURCES.parent
    assert grafana["/etc/grafana/provisioning/dashboards"] == PROVIDERS.parent
    (provider,) = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert grafana[provider["options"]["path"]] == DASHBOARD.parent
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (grafana[str(Path(home).parent)] / Path(home).name) == DASHBOARD


def test_grafana_is_closed_by_default_and_takes_its_password_from_the_env_file():
    environment = monitored("vllm")["services"]["grafana"]["environment"]
    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert environment["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert environment["GF_SECURITY_ADMIN_PASSWORD"] == ""  # Grafana's admin/admin, changed at first login
    chosen = monitored("vllm", {"GRAFANA_ADMIN_PASSWORD": "s3cret-passw0rd"})["services"]["grafana"]["environment"]
    assert chosen["GF_SECURITY_ADMIN_PASSWORD"] == "s3cret-passw0rd"


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_healthchecks_use_only_tools_their_image_has(stack):
    for name in ("prometheus", "grafana"):
        service = monitored(stack)["services"][name]
        repo = service["image"].rsplit(":", 1)[0]
        missing = executables(service["healthcheck"]["test"]) - MONITORING_IMAGE_TOOLS[repo]
        assert not missing, f"{name}: healthcheck runs {sorted(missing)}, which {service['image']} lacks"


@pytest.mark.parametrize("service, port_in_test", [("prometheus", 9090), ("grafana", 3000)])
def test_healthchecks_pass_on_a_healthy_service_and_fail_otherwise(stand_in, service, port_in_test):
    from cli.local_backend import free_port

    test = monitored("vllm")["services"][service]["healthcheck"]["test"]
    if not shutil.which(test[1]):
        pytest.skip(f"{test[1]} is not installed here")
    port, handler = stand_in
    assert run_check(test, port_in_test, port) == 0
    handler.status = 503
    assert run_check(test, port_in_test, port) != 0
    assert run_check(test, port_in_test, free_port()) != 0


def test_backend_outlives_its_own_shutdown_timeout():
    backend = monitored("vllm")["services"]["backend"]
    grace = backend["stop_grace_period"]
    match = re.fullmatch(r"(\d+)s", grace)
    assert match, f"stop_grace_period {grace!r}: expected seconds"
    assert int(match.group(1)) > Settings.model_fields["shutdown_timeout_s"].default + 5
    for name in ("SHUTDOWN_TIMEOUT_S", "LOG_FORMAT"):
        assert name in backend["environment"]
    assert stack_render("vllm", {"SHUTDOWN_TIMEOUT_S": "60", "BACKEND_STOP_GRACE_PERIOD": "75s"})["services"]["backend"][
        "stop_grace_period"
    ] == "1m15s"


# --- env files -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stack", sorted(STACKS))
def test_monitoring_knobs_are_documented_commented_and_wired(stack):
    knobs = env_file_monitoring_knobs(stack)
    assert set(knobs) == set(MONITORING_KNOBS), "Monitoring section of the env file vs MONITORING_KNOBS"
    assert not set(knobs) & set(read_env_file(ROOT / STACKS[stack][1])), "monitoring knobs stay commented out"
    assert knobs["METRICS_API_KEY"] == "" and knobs["GRAFANA_ADMIN_PASSWORD"] == ""
    baseline = monitored(stack)
    for key, alternative in MONITORING_KNOBS.items():
        # The documented value is the default: setting it changes nothing...
        if knobs[key]:
            assert monitored(stack, {key: knobs[key]}) == baseline, f"{key}={knobs[key]} is documented as the default but is not"
        # ...and another value changes the stack.
        assert monitored(stack, {key: alternative}) != baseline, f"{key} is not wired"


# --- Prometheus ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stack", sorted(STACKS))
def test_every_scrape_target_is_a_service_and_port_of_the_stack(stack, tmp_path):
    project = monitored(stack)
    ports = service_ports(project)
    config = prometheus_config()
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"backend", "vllm"}
    targets = {name: [t for sc in job.get("static_configs", []) for t in sc["targets"]] for name, job in jobs.items()}
    # The vllm job's targets are the file the entrypoint writes from the stack's VLLM_METRICS_TARGET.
    environment = project["services"]["prometheus"]["environment"]
    assert run_entrypoint(tmp_path, environment).returncode == 0
    (file_sd,) = jobs["vllm"]["file_sd_configs"]
    for path in file_sd["files"]:
        written = tmp_path / "run" / Path(path).relative_to(entrypoint_runtime_dir())
        targets["vllm"] += [t for group in json.loads(written.read_text()) for t in group["targets"]]
    assert targets["backend"] == ["backend:8000"]
    assert targets["vllm"] == (["vllm:8001"] if stack == "vllm" else [])  # no vLLM in the Ollama stack: no target
    for job, hosts in targets.items():
        for target in hosts:
            host, port = target.rsplit(":", 1)
            assert host in project["services"], f"job {job}: {target} names no service of the {stack} stack"
            assert ports[host] == int(port), f"job {job}: {host} listens on {ports[host]}, not {port}"
            assert jobs[job].get("metrics_path", "/metrics") == "/metrics"
    # An external vLLM is configuration only
    external = monitored("vllm", {"VLLM_METRICS_TARGET": "gpu-pool.internal:8001"})["services"]["prometheus"]["environment"]
    assert external["VLLM_METRICS_TARGET"] == "gpu-pool.internal:8001"


@pytest.mark.parametrize("shell", ["sh", "busybox"])
def test_the_entrypoint_writes_what_prometheus_reads(tmp_path, shell):
    """The key file and the vLLM target file land where prometheus.yml looks, in the tmpfs, readable only by
    Prometheus' user; the compose command reaches Prometheus unchanged."""
    if not shutil.which(shell):
        pytest.skip(f"{shell} is not installed here (the image's shell is busybox sh)")
    argv = (shell, "sh") if shell == "busybox" else (shell,)
    runtime = entrypoint_runtime_dir()
    prometheus = monitored("vllm")["services"]["prometheus"]
    assert runtime in prometheus["tmpfs"], "the key must go to a tmpfs, not a volume"
    backend_job = next(job for job in prometheus_config()["scrape_configs"] if job["job_name"] == "backend")
    assert backend_job["authorization"]["type"] == "Bearer"
    key_file = Path(backend_job["authorization"]["credentials_file"])
    assert str(key_file.parent) == runtime

    key = "ops-0123456789abcdef"
    done = run_entrypoint(tmp_path, {"METRICS_API_KEY": key, "VLLM_METRICS_TARGET": "vllm:8001"}, shell=argv)
    assert done.returncode == 0, done.stderr
    written = tmp_path / "run" / key_file.name
    assert written.read_text() == key
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert (tmp_path / "run" / "args").read_text().split() == prometheus["command"]

    # No key (API_KEYS empty): an empty file, which Prometheus reads as an empty credential.
    done = run_entrypoint(tmp_path, {"METRICS_API_KEY": "", "VLLM_METRICS_TARGET": ""}, shell=argv)
    assert done.returncode == 0 and written.read_text() == ""
    assert json.loads((tmp_path / "run" / "vllm_targets.json").read_text()) == []
    # Several targets (the replicas overlay): one group, every replica.
    done = run_entrypoint(tmp_path, {"VLLM_METRICS_TARGET": "vllm:8001,vllm-1:8001"}, shell=argv)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "run" / "vllm_targets.json").read_text()) == [{"targets": ["vllm:8001", "vllm-1:8001"]}]
    # A value that would break the JSON, or an empty entry in the list, is refused before Prometheus starts.
    for bad in ('vllm:8001"]', "vllm:8001,,vllm-1:8001", "vllm:8001,", ",vllm:8001"):
        done = run_entrypoint(tmp_path, {"VLLM_METRICS_TARGET": bad}, shell=argv)
        assert done.returncode != 0 and "host:port" in done.stderr, bad


def test_the_replicas_overlay_scrapes_every_replica(tmp_path):
    """With docker-compose.vllm-replicas.yml, each vLLM replica's own /metrics is a target (queue and KV cache
    are per replica), and each target is a service of that project on vLLM's port."""
    files, env = STACKS["vllm"]
    project = render([*files, "docker-compose.vllm-replicas.yml"], env, {"COMPOSE_PROFILES": "vllm,monitoring"})
    environment = project["services"]["prometheus"]["environment"]
    assert run_entrypoint(tmp_path, environment).returncode == 0
    groups = json.loads((tmp_path / "run" / "vllm_targets.json").read_text())
    targets = [t for group in groups for t in group["targets"]]
    assert targets == ["vllm:8001", "vllm-1:8001"]
    for target in targets:
        host, port = target.split(":")
        command = project["services"][host]["command"]
        assert command[command.index("--port") + 1] == port, target


def test_alert_rules_cover_the_design_thresholds_and_the_backend():
    rules = {rule["alert"]: rule for rule in alert_rules()}
    for rule in rules.values():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
    assert set(rules) >= {
        "RagBackendDown", "RagHighErrorRate", "RagLatencyP99High", "RagLLMUnavailable", "RagStoreUnavailable",
        "RagEmbedWorkerCrashes", "RagAnswersShed", "VLLMDown", "VLLMQueueBacklog", "VLLMKVCacheNearlyFull", "VLLMLatencyP99High",
    }

    def flat(name):
        return " ".join(rules[name]["expr"].split())

    # DESIGN.md: p99 > 10 s for 5 min, waiting > 100 for 2 min, KV cache > 95 % for 5 min
    assert "histogram_quantile(0.99," in flat("RagLatencyP99High") and flat("RagLatencyP99High").endswith("> 10")
    assert rules["RagLatencyP99High"]["for"] == "5m"
    assert "vllm:num_requests_waiting" in flat("VLLMQueueBacklog") and flat("VLLMQueueBacklog").endswith("> 100")
    assert rules["VLLMQueueBacklog"]["for"] == "2m"
    assert "vllm:kv_cache_usage_perc" in flat("VLLMKVCacheNearlyFull") and flat("VLLMKVCacheNearlyFull").endswith("> 0.95")
    assert rules["VLLMKVCacheNearlyFull"]["for"] == "5m"
    assert "vllm:e2e_request_latency_seconds_bucket" in flat("VLLMLatencyP99High") and rules["VLLMLatencyP99High"]["for"] == "5m"
    assert 'type=~"llm_unavailable|llm_timeout"' in flat("RagLLMUnavailable")
    assert prometheus_config()["rule_files"] == ["alerts.yml"]


def test_every_promql_expression_parses():
    promql = pytest.importorskip("promql_parser", reason="promql-parser (test extra) validates the PromQL")
    errors = []
    for where, expr in all_expressions():
        try:
            promql.parse(expr)
        except ValueError as exc:
            errors.append(f"{where}: {exc}\n    {expr}")
    assert not errors, "\n".join(errors)


def test_every_metric_name_is_one_the_backend_or_vllm_exports():
    allowed = PROCESS_METRICS | PROMETHEUS_SERIES | vllm_metric_names()
    for family, kind in RAG_METRICS.items():
        allowed |= sample_names(family, kind)
    used = set()
    for where, expr in all_expressions():
        for selector in selectors(expr):
            assert selector.name, f"{where}: a selector without a metric name: {expr}"
            assert selector.name in allowed, f"{where}: {selector.name} is exported by neither the backend nor vLLM 0.32"
            used.add(selector.name)
            if selector.name in PROCESS_METRICS:
                assert 'job="backend"' in str(selector), f"{where}: vLLM exports {selector.name} too: pick job=\"backend\""
    # vLLM 0.32 renamed the KV cache gauge (DESIGN.md's vllm:gpu_cache_usage_perc no longer exists)
    assert "vllm:kv_cache_usage_perc" in used and "vllm:gpu_cache_usage_perc" not in allowed
    # Everything the backend exports is looked at somewhere
    unused = {f for f, kind in RAG_METRICS.items() if not sample_names(f, kind) & used}
    assert not unused, f"rag_* metrics neither on the dashboard nor in an alert: {unused}"


def test_promtool_accepts_the_config_and_the_rules(tmp_path):
    """Prometheus' own checker, where one is installed (PROMTOOL=/path, or promtool on PATH)."""
    promtool = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool is not installed here (promql-parser checked the expressions)")
    runtime = entrypoint_runtime_dir()
    config_dir = tmp_path / "etc"
    shutil.copytree(PROMETHEUS_DIR, config_dir)
    assert run_entrypoint(tmp_path, {"METRICS_API_KEY": "ops-0123456789abcdef", "VLLM_METRICS_TARGET": "vllm:8001"}).returncode == 0
    config = config_dir / "prometheus.yml"
    config.write_text(config.read_text().replace(runtime, str(tmp_path / "run")))
    for args in (["check", "config", str(config)], ["check", "rules", str(config_dir / "alerts.yml")]):
        done = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}{done.stderr}"


# --- Grafana ------------------------------------------------------------------------------------------------

def test_grafana_provisioning_points_at_the_stack_prometheus():
    (datasource,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    assert datasource["jsonData"]["timeInterval"] == prometheus_config()["global"]["scrape_interval"]
    (provider,) = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert provider["type"] == "file" and provider["allowUiUpdates"] is False


def test_dashboard_panels_have_ids_datasources_and_queries():
    board = dashboard()
    (datasource,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert board["uid"] and board["title"]
    all_panels = [p for top in board["panels"] for p in (top, *top.get("panels", []))]
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for panel in dashboard_panels():
        title = panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": datasource["uid"]}, title
        assert panel["targets"], f"{title}: no query"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), title
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"] == panel["datasource"], title
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24 and pos["w"] > 0 and pos["h"] > 0, title


def test_dashboard_shows_what_operators_need():
    exprs = " ".join(t["expr"] for p in dashboard_panels() for t in p["targets"])
    stages = {s for group in re.findall(r'stage=~"([^"]+)"', exprs) for s in group.split("|")}
    assert {"ttft", "generation", "total", "retrieval", "search", "query_embed", "embed", "parse"} <= stages
    assert stages <= RAG_STAGES
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (le, route) (rate(rag_http_request_duration_seconds_bucket" in exprs
    for name in (
        "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
        "vllm:time_to_first_token_seconds_bucket", "vllm:e2e_request_latency_seconds_bucket",
        "vllm:generation_tokens_total", "vllm:num_preemptions_total",
        "rag_errors_total", "rag_empty_retrievals_total", "rag_context_chunks_dropped_total",
        "rag_llm_tokens_total", "rag_http_requests_in_flight", "process_resident_memory_bytes",
    ):
        assert name in exprs, f"no panel shows {name}"
