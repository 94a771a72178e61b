"""Compose healthchecks, read and run: which programs a check calls, and running a check here against a
stand-in of the service it probes."""

from __future__ import annotations

import http.server
import re
import shlex
import subprocess
import sys

# Images built here: the final stage's base decides (Dockerfile: python:3.11.x-slim, Debian, no curl).
BASE_IMAGE_TOOLS = {"python": {"python", "python3", "sh", "bash", "head", "grep"}}
SHELL_BUILTINS = {"exec", "printf", "echo", "test", "[", "true", "false", ":", "read", "exit"}


def executables(test: list[str]) -> set[str]:
    """Programs a healthcheck runs: the CMD itself and, for shells, the first word of each command."""
    kind, *argv = test
    if kind == "CMD-SHELL":
        argv = ["sh", "-c", argv[0]]
    found = {argv[0]}
    if argv[0] in {"sh", "bash"} and "-c" in argv:
        script = argv[argv.index("-c") + 1]
        for command in re.split(r"&&|\|\||\||;", script):
            words = shlex.split(command.strip())
            if words and words[0] not in SHELL_BUILTINS:
                found.add(words[0])
    return found


class StandIn(http.server.BaseHTTPRequestHandler):
    """Answers every GET with `status` (set it on a subclass per server) and a small JSON body."""

    status = 200

    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = b'{"status":"ok"}'
        self.send_response(type(self).status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def run_check(test: list[str], port_in_test: int, port: int) -> int:
    """Run a CMD healthcheck here, with the service's port swapped for the stand-in's."""
    kind, *argv = test
    assert kind == "CMD"
    argv = [a.replace(str(port_in_test), str(port)) for a in argv]
    if argv[0] in {"python", "python3"}:
        argv[0] = sys.executable
    return subprocess.run(argv, capture_output=True, timeout=30).returncode
