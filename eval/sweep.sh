#!/usr/bin/env bash
# The comparison behind the defaults in docs/retrieval.md: every packaged embedding model x three chunk
# sizes x both golden sets, each evaluated in every mode and fusion variant on one throwaway index.
# Reports (per-question rows dropped) go to eval/results/sweep/; eval/sweep_tables.py prints the tables.
# ~30 minutes on 2 cores (multilingual-e5-small indexes slowest).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
MODES="dense sparse hybrid:dbsf hybrid:rrf:60:1:1 hybrid:rrf:10:1:1 hybrid:rrf:2:1:1 hybrid:rrf:60:2:1 hybrid:rrf:60:1:2"
OUT=eval/results/sweep
mkdir -p "$OUT"
for model in sentence-transformers/all-MiniLM-L6-v2 intfloat/multilingual-e5-small universal-sentence-encoder-multilingual; do
  for chunking in "128 24" "200 40" "320 64"; do
    read -r tokens overlap <<< "$chunking"
    for set in docs multilingual; do
      corpus=docs; [ "$set" = multilingual ] && corpus=eval/corpora/multilingual
      report="$OUT/$(basename "$model")-$tokens-$set.json"
      EMBED_MODEL=$model CHUNK_TOKENS=$tokens CHUNK_OVERLAP=$overlap \
        $PY -m cli.eval --golden "eval/golden/$set.jsonl" --dir "$corpus" --fresh --out "$report" --modes $MODES > /dev/null
      $PY - "$report" <<'PYEOF'
import json, sys
report = json.load(open(sys.argv[1]))
for mode in report["modes"].values():
    mode.pop("questions", None)
json.dump(report, open(sys.argv[1], "w"), indent=1, ensure_ascii=False)
PYEOF
      echo "$report"
    done
  done
done
# BM25 analysis variants (BM25 alone; the default model's chunks) on the multilingual set.
for language in auto none english russian; do
  report="$OUT/bm25-$language-multilingual.json"
  BM25_LANGUAGE=$language $PY -m cli.eval --golden eval/golden/multilingual.jsonl --dir eval/corpora/multilingual \
    --fresh --out "$report" --modes sparse > /dev/null
  echo "$report"
done
$PY eval/sweep_tables.py
