"""Claim-level citation checking: does the source an answer's sentence cites say what the sentence claims?

Pure functions over text, run by RagService on every finished answer (CITATION_CHECK; backend/rag.py
`_check_claims`, docs/answering.md "Claim checking in the answer path"):

- `split_sentences(answer)`: the answer's sentences with character offsets. A sentence ends at `.`, `!`, `?`, `…`
  followed by space and a capital, digit, bullet or the end, and at line breaks of lists; `[n]` markers right after
  the full stop stay with the sentence they follow; abbreviations (e.g., np., т.е.), decimals (3.5) and code spans
  never end one.
- `check(answer, sources, embed=None, attribute=False)`: one `CitationCheck` per sentence; `embed` is called at most
  once, for the sentences whose verdict depends on a cosine (rules 4 and 5); `attribute` tries every source for an
  uncited sentence (an answer that cites nothing).

The rule (measured on eval/golden/citations.jsonl, docs/answering.md "Claim checking"):

0. A short sentence whose `[n]` only says where the previous one comes from ("This is stated in [1].", "Это указано в
   [1].") hands its numbers to that sentence when it had none, and claims nothing itself (`no_claim`).
1. A sentence without `[n]` is `uncited` when it states facts (a number, an identifier, a name written with a capital
   inside the sentence) and `no_claim` otherwise ("Here is what I found.").
2. Facts must appear **exactly** in the cited sources (any of them): numbers after normalising thousands separators
   and decimal commas (`1,000` = `1 000` = `1000`, `3,5` = `3.5`; a number written as a word in the source, "six",
   counts), identifiers (`UPPER-CODE-17`, `snake_case`, `dotted.names`, `/paths`, `--flags`, `code spans`,
   CamelCase names) case-sensitively. One missing fact makes the sentence `unsupported`.
3. Then lexical support: the share of the sentence's content words (stop words dropped, words cut to a 5-character
   stem, per language) found in the best window of 1-3 consecutive sentences of a cited source; that window is the
   `span`. Supported when the share reaches `min_overlap`.
4. Across languages (the sentence's language is not the source's: a Polish answer citing an English source), words
   cannot overlap, so the sentence is supported when it has at least one fact and all of its facts match, and, when an
   `embed` callable is given, the cosine of sentence and span reaches `min_cosine`. Without facts and without
   `embed`, a cross-language sentence is unsupported (nothing could be checked).
5. With `embed` (texts -> unit vectors), a same-language sentence whose overlap falls short is still supported when
   the cosine reaches `min_cosine` (a paraphrase).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from backend.citations.facts import (
    _WORD_NUMBERS,
    STEM,
    _cosine,
    _has_identifier,
    _has_name,
    _named,
    _source_numbers,
    _windows,
    facts,
    identifiers,
    language,
    names,
    negated,
    numbers,
    stems,
)
from backend.citations.sentences import _CODE, MARKER, Sentence, split_sentences

__all__ = ["CitationCheck", "Sentence", "Span", "check", "check_sentence", "facts", "identifiers", "numbers",
           "split_sentences"]

Embed = Callable[[list[str]], Any]  # texts -> rows of unit vectors (a numpy array, or lists of floats)

MIN_OVERLAP = 0.5
MIN_COSINE = 0.8
NEGATION_CHECK = True

@dataclass(frozen=True)
class Span:
    n: int
    start: int
    end: int


@dataclass
class CitationCheck:
    sentence: str
    start: int
    end: int
    sources: list[int]
    supported: bool | None
    status: str  # supported | unsupported | uncited | no_claim
    span: Span | None
    score: float
    missing: list[str] = field(default_factory=list)  # facts not found in the cited sources
    attributed: bool = False  # uncited, and supported by source `sources[0]` (found by trying each source)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Pending:
    """A sentence whose verdict waits for the cosine of the sentence and its span (one embed call per answer)."""

    result: Callable[..., CitationCheck]
    claim: str
    window: str
    span: Span
    overlap: float
    cross: bool
    has_facts: bool


def _assess(sentence: Sentence, sources: list[str], cited: list[int], use_embed: bool,
            min_overlap: float) -> CitationCheck | _Pending:
    """The sentence's verdict against sources `cited`, or what is left to decide with the embedder's cosine."""
    nums, idents = facts(sentence.text)

    def result(status: str, supported: bool | None, span: Span | None = None, score: float = 0.0,
               missing: list[str] | None = None) -> CitationCheck:
        return CitationCheck(sentence.text, sentence.start, sentence.end, list(sentence.markers), supported, status,
                             span, round(score, 4), missing or [])

    cited_text = "\n".join(sources[n - 1] for n in cited)
    source_nums = _source_numbers(cited_text)
    missing = sorted(x for x in nums if x not in source_nums)
    missing += sorted(x for x in idents if not _has_identifier(cited_text, x))
    plain = MARKER.sub(" ", sentence.text)
    if language(plain) == language(cited_text):
        missing += [x for x in names(plain) if x not in idents and not _has_name(cited_text, x)]

    words = stems(_CODE.sub(" ", sentence.text)) - {s[:STEM] for s in idents}
    best: tuple[float, int, int, int] = (-1.0, 0, 0, 0)  # overlap, n, start, end
    for n in cited:
        src = sources[n - 1]
        for start, end in _windows(src):
            window = src[start:end]
            overlap = len(words & stems(window)) / len(words) if words else 0.0
            fact_hits = sum(1 for x in nums if x in _source_numbers(window)) + sum(
                1 for x in idents if _has_identifier(window, x))
            key = overlap + 0.1 * fact_hits - 0.001 * (end - start) / 100
            if key > best[0]:
                best = (key, n, start, end)
    _, n, start, end = best
    span = Span(n, start, end)
    window = sources[n - 1][start:end]
    overlap = len(words & stems(window)) / len(words) if words else 0.0
    cross = language(plain) != language(sources[n - 1])
    if missing:
        return result("unsupported", False, span, min(overlap, 0.5) * 0.5, missing)
    if not cross and NEGATION_CHECK:
        clauses = [c for c in re.split(r"[;,:—–]|\s-\s", window) if c.strip()] or [window]
        closest = max(clauses, key=lambda c: len(words & stems(c)) / (1 + len(stems(c))) ** 0.5)
        if negated(plain) != negated(closest):
            return result("unsupported", False, span, overlap * 0.5, ["negation"])
    pending = _Pending(result, plain.strip(), window, span, overlap, cross, bool(nums or idents))
    # The cosine decides only a cross-language sentence with facts and a same-language one short of the overlap.
    needs_cosine = use_embed and ((cross and pending.has_facts) or (not cross and overlap < min_overlap))
    return pending if needs_cosine else _decide(pending, None, min_overlap, MIN_COSINE)


def _decide(p: _Pending, cosine: float | None, min_overlap: float, min_cosine: float) -> CitationCheck:
    if p.cross:
        ok = p.has_facts and (cosine is None or cosine >= min_cosine)
        score = cosine if cosine is not None else (0.75 if ok else 0.0)
    else:
        ok = p.overlap >= min_overlap or (cosine is not None and cosine >= min_cosine)
        score = max(p.overlap, cosine or 0.0)
    return p.result("supported" if ok else "unsupported", ok, p.span, score)


def _uncited(sentence: Sentence, has_facts: bool) -> CitationCheck:
    return CitationCheck(sentence.text, sentence.start, sentence.end, [], None,
                         "uncited" if has_facts else "no_claim", None, 0.0)


def _has_facts(sentence: Sentence) -> bool:
    nums, idents = facts(sentence.text)
    return bool(nums or idents or _named(MARKER.sub(" ", sentence.text))
                or any(w.lower() in _WORD_NUMBERS for w in re.findall(r"\w+", sentence.text)))


# Words of a sentence that only says where the previous one comes from ("This is stated in [1].", "Это указано в
# [2].", "Informacja pochodzi ze źródła [1]."): small models (Qwen2.5-1.5B) cite that way, after an uncited sentence.
_REFERENCE_WORDS = re.compile(
    r"\b(?:source|sources|stated|states|specified|mentioned|provided|according|given|information|document|documents"
    r"|источник\w*|указан\w*|сказано|согласно|приведен\w*|упомян\w*|информаци\w*|документ\w*"
    r"|źródł\w*|podan\w*|wskazan\w*|zgodnie|informacj\w*|dokument\w*|wynika|pochodzi)\b",
    re.IGNORECASE,
)
_REFERENCE_MAX_WORDS = 14


def _is_reference_only(sentence: Sentence) -> bool:
    """A short sentence with `[n]` that states nothing itself, only that "this" is in source n."""
    words = re.findall(r"\w+", MARKER.sub(" ", sentence.text))
    return (bool(sentence.markers) and len(words) <= _REFERENCE_MAX_WORDS and not _has_facts(sentence)
            and _REFERENCE_WORDS.search(sentence.text) is not None)


def _carry_references(sentences: list[Sentence]) -> tuple[list[Sentence], set[int]]:
    """Markers of a reference-only sentence go to the uncited sentence right before it, which is then checked
    against them; the reference sentence itself claims nothing (its index is returned, to be `no_claim`)."""
    out, references = list(sentences), set()
    for i in range(1, len(out)):
        previous, sentence = out[i - 1], out[i]
        if not previous.markers and _is_reference_only(sentence) and _has_facts(previous):
            out[i - 1] = replace(previous, markers=sentence.markers)
            references.add(i)
    return out, references


def check_sentence(sentence: Sentence, sources: list[str], embed: Embed | None = None,
                   min_overlap: float = MIN_OVERLAP, min_cosine: float = MIN_COSINE) -> CitationCheck:
    return _check([sentence], sources, embed, min_overlap, min_cosine, attribute=False)[0]


def check(answer_text: str, sources: list[str], embed: Embed | None = None,
          min_overlap: float = MIN_OVERLAP, min_cosine: float = MIN_COSINE,
          attribute: bool = False) -> list[CitationCheck]:
    """One check per sentence of `answer_text`; `sources[n-1]` is the text of source [n].

    `embed` (texts -> unit vectors) is called at most once, with the sentence and span of each sentence whose verdict
    depends on their cosine (a cross-language sentence with facts, a same-language one short of the overlap); none
    when no sentence needs it. `attribute`: a sentence without `[n]` that states facts is checked against each
    source alone, by its facts and words (not the embedder: a pass per sentence and source costs more than the
    check itself, docs/answering.md), and the one that supports it best (highest score) is reported: `status`
    "supported", `sources` [n], `attributed` True. When none does it stays "uncited". Used when the answer cites
    nothing at all.
    """
    return _check(split_sentences(answer_text), sources, embed, min_overlap, min_cosine, attribute)


def _check(sentences: list[Sentence], sources: list[str], embed: Embed | None, min_overlap: float,
           min_cosine: float, attribute: bool) -> list[CitationCheck]:
    # Each sentence has one or more candidates: its cited sources together, or (attribution) each source alone.
    candidates: list[list[CitationCheck | _Pending]] = []
    sentences, references = _carry_references(sentences)
    for i, sentence in enumerate(sentences):
        cited = [n for n in sentence.markers if 1 <= n <= len(sources)]
        if i in references:
            candidates.append([CitationCheck(sentence.text, sentence.start, sentence.end, list(sentence.markers),
                                             None, "no_claim", None, 0.0)])
        elif sentence.markers and not cited:
            candidates.append([CitationCheck(sentence.text, sentence.start, sentence.end, list(sentence.markers),
                                             False, "unsupported", None, 0.0,
                                             [f"[{n}]" for n in sentence.markers])])
        elif sentence.markers:
            candidates.append([_assess(sentence, sources, cited, embed is not None, min_overlap)])
        elif not _has_facts(sentence):
            candidates.append([_uncited(sentence, False)])
        elif attribute and sources:
            row: list[CitationCheck | _Pending] = [_uncited(sentence, True)]
            row += [_assess(sentence, sources, [n], False, min_overlap) for n in range(1, len(sources) + 1)]
            candidates.append(row)
        else:
            candidates.append([_uncited(sentence, True)])
    pending = [c for cs in candidates for c in cs if isinstance(c, _Pending)]
    cosines: dict[int, float] = {}
    if pending and embed is not None:
        vectors = embed([t for p in pending for t in (p.claim, p.window)])
        cosines = {id(p): float(_cosine(vectors[2 * i], vectors[2 * i + 1])) for i, p in enumerate(pending)}
    out = []
    for sentence, cs in zip(sentences, candidates):
        decided = [_decide(c, cosines.get(id(c)), min_overlap, min_cosine) if isinstance(c, _Pending) else c
                   for c in cs]
        if len(decided) == 1:
            out.append(decided[0])
            continue
        found = [c for c in decided[1:] if c.status == "supported"]
        if found:
            best = max(found, key=lambda c: c.score)
            best.sources, best.attributed = [best.span.n] if best.span else [], True
            out.append(best)
        else:
            out.append(decided[0])
    return out
