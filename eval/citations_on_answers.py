"""The claim checker on a real model's answers: the supported share of the answers stored in an answer-eval report,
checked against the sources `/search` returns for their questions (top 4, as `cli.eval answers` asks), with the
reference-sentence rule of backend/citations off and on (docs/answering.md "Claim checking", rule 0).

    HF_HUB_OFFLINE=1 .venv/bin/python eval/citations_on_answers.py [eval/results/answers-<model>-cpu2.json]

Starts a backend on a throwaway DATA_DIR (no engine needed), indexes eval/corpora/multilingual, prints one line per
setting and split. /search's top 4 approximates the sources /ask gave the model (its relevance filter may drop some).
"""
import json, sys, os, tempfile, subprocess, time
from pathlib import Path
import httpx
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cli.local_backend import start_backend, stop_backend
from backend.citations import check
from backend.retrieval.embedders.registry import create_embedder
from backend.settings import Settings
from backend.retrieval.embedders.base import off_path_query_embedding
d = json.load(open(sys.argv[1] if len(sys.argv) > 1 else "eval/results/answers-qwen2.5-coder-1.5b-instruct-cpu2.json"))
env = {"DATA_DIR": tempfile.mkdtemp(), "QDRANT_URL": "", "LLM_BACKEND": "vllm", "VLLM_BASE_URL": "http://127.0.0.1:9/v1", "VLLM_MODEL": "x", "LOG_LEVEL": "warning"}
proc, url = start_backend(env)
try:
    for p in sorted(Path("eval/corpora/multilingual").rglob("*")):
        if p.is_file():
            r = httpx.post(f"{url}/documents", data={"space_id": "ml"}, files={"file": (str(p.relative_to("eval/corpora/multilingual")), p.read_bytes())}, timeout=300)
    emb = create_embedder(Settings(_env_file=None, embed_isolation="inline"))
    embed = off_path_query_embedding(emb)
    import backend.citations as bc
    from collections import Counter
    real = bc._carry_references
    for label, carry in (("before", lambda s: (s, set())), ("after", real)):
        bc._carry_references = carry
        for split in ("tune", "test"):
            counts = Counter()
            for q in d['questions']:
                if q['split'] != split:
                    continue
                hits = httpx.get(f"{url}/search", params={"q": q["question"], "space_id": "ml", "top_k": 4}, timeout=120).json()["results"]
                for c in check(q['answer'], [h["text"] for h in hits], embed=embed):
                    counts[c.status] += 1
            judged = sum(v for k, v in counts.items() if k != "no_claim")
            print(label, split, dict(counts), "supported share", round(counts["supported"] / max(judged, 1), 3))
finally:
    stop_backend(proc)
