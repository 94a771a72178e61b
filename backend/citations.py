"""Claim-level citation checking: does the source an answer's sentence cites say what the sentence claims?

A library, not yet wired into the answer path (issue 19, item 2). Pure functions over text:

- `split_sentences(answer)`: the answer's sentences with character offsets. A sentence ends at `.`, `!`, `?`, `…`
  followed by space and a capital, digit, bullet or the end, and at line breaks of lists; `[n]` markers right after
  the full stop stay with the sentence they follow; abbreviations (e.g., np., т.е.), decimals (3.5) and code spans
  never end one.
- `check(answer, sources, embed=None)`: one `CitationCheck` per sentence.

The rule (measured on eval/golden/citations.jsonl, docs/answering.md "Claim checking"):

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

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

Embed = Callable[[list[str]], Sequence[Sequence[float]]]

MIN_OVERLAP = 0.5
MIN_COSINE = 0.8
STEM = 5
WINDOW = 3
NEGATION_CHECK = True

MARKER = re.compile(r"(?<!\w)\s*\[(\d+(?:\s*,\s*\d+)*)\]")
_CODE = re.compile(r"`[^`\n]+`")
_BULLET = re.compile(r"^[ \t]*(?:[-*•+]|\d{1,3}[.)])[ \t]+")
ABBREVIATIONS = frozenset("""
e.g i.e etc vs cf approx no nr dr mr mrs ms prof inc ltd st fig eq ca
np tzn itd itp m.in ok godz tj wg zob pkt ul prof tys mln mld r
т.е т.д т.п т.к см г гг др стр рис ок тыс млн млрд руб им
""".split())
_SENTENCE_END = re.compile(r"[.!?…]+[\"'»”)]*")


@dataclass(frozen=True)
class Sentence:
    text: str
    start: int
    end: int
    markers: tuple[int, ...] = ()


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

    def to_dict(self) -> dict:
        return asdict(self)


def _masked(text: str) -> str:
    """The text with code spans blanked (same length), so that nothing inside one ends a sentence."""
    return _CODE.sub(lambda m: "`" + "x" * (len(m.group()) - 2) + "`", text)


def _ends_sentence(masked: str, dot: int, end: int) -> bool:
    """Whether the terminator run masked[dot:end] ends a sentence."""
    if masked[dot] == ".":
        if end < len(masked) and masked[end - 1] == "." and masked[end:end + 1].isdigit():
            return False
        word = re.search(r"([\w.]+)$", masked[:dot])
        if word and end - dot == 1:
            w = word.group(1).lower()
            if w in ABBREVIATIONS or (len(w) == 1 and w.isalpha()) or re.fullmatch(r"(?:\w\.)+\w", w):
                return False
    rest = masked[end:]
    nxt = re.match(r"(?:\s*\[\d+(?:\s*,\s*\d+)*\])*\s+(\S)", rest)
    if not rest.strip() or re.fullmatch(r"(?:\s*\[\d+(?:\s*,\s*\d+)*\])*\s*", rest):
        return True
    if not nxt:
        return False
    c = nxt.group(1)
    return c.isupper() or c.isdigit() or c in "\"'«„“`*-•(["


def split_sentences(answer: str) -> list[Sentence]:
    """The sentences of `answer`, with offsets (answer[start:end] == text) and the [n] markers each carries."""
    out: list[Sentence] = []
    masked = _masked(answer)
    pos = 0
    for line in answer.splitlines(keepends=True):
        line_start, pos = pos, pos + len(line)
        body = line.rstrip("\r\n")
        bullet = _BULLET.match(body)
        cursor = line_start + (bullet.end() if bullet else 0)
        line_end = line_start + len(body)
        for m in _SENTENCE_END.finditer(masked, cursor, line_end):
            if not _ends_sentence(masked[:line_end], m.start(), m.end()):
                continue
            end = m.end()
            trailing = re.match(r"(?:\s*\[\d+(?:\s*,\s*\d+)*\])+", answer[end:line_end])
            if trailing:
                end += trailing.end()
            _add(out, answer, cursor, end)
            cursor = end
        _add(out, answer, cursor, line_end)
    return out


def _add(out: list[Sentence], answer: str, start: int, end: int) -> None:
    while start < end and answer[start].isspace():
        start += 1
    while end > start and answer[end - 1].isspace():
        end -= 1
    text = answer[start:end]
    if not re.search(r"\w", MARKER.sub("", text)):
        if out and MARKER.search(text):  # a line of markers alone belongs to the sentence before it
            prev = out[-1]
            out[-1] = Sentence(answer[prev.start:end], prev.start, end, prev.markers + _markers(text))
        return
    out.append(Sentence(text, start, end, _markers(text)))


def _markers(text: str) -> tuple[int, ...]:
    found: list[int] = []
    for m in MARKER.finditer(text):
        found.extend(int(x) for x in re.split(r"\s*,\s*", m.group(1)) if int(x) not in found)
    return tuple(found)


# ---- facts ----

_NUMBER = re.compile(r"(?<![\w.])\d{1,3}(?:[ \u00a0\u202f,]\d{3})+(?:[.,]\d+)?(?!\w)|(?:(?<=\bv)|(?<![\w.]))\d+(?:[.,]\d+)*")
_IDENTIFIERS = (
    re.compile(r"`([^`\n]+)`"),  # code spans
    re.compile(r"(?<![\w-])--?[a-zA-Z][\w-]*"),  # --flags
    re.compile(r"(?<![\w/])(?:/[\w.{}-]+)+/?"),  # /paths
    re.compile(r"\b[A-Za-z][A-Za-z0-9]+(?:[._][A-Za-z0-9]+)+\b"),  # snake_case, dotted.names, file.ext
    re.compile(r"\b[A-ZА-Я][A-ZА-Я0-9]*(?:-[A-ZА-Я0-9]+)+\b"),  # AUTH-E017, CC-4410, RL-0429
    re.compile(r"\b[A-Z]{2,}[A-Z0-9]*\b"),  # UDP, HTTP, EUR
    re.compile(r"\b[A-Z][a-z]+[A-Z]\w*\b"),  # WireGuard, FileVault
)
_WORD_NUMBERS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
    "twelve": 12, "fifteen": 15, "twenty": 20, "thirty": 30, "hundred": 100,
    "jeden": 1, "dwa": 2, "dwie": 2, "dwóch": 2, "trzy": 3, "cztery": 4, "pięć": 5, "sześć": 6, "dziesięć": 10,
    "dwóch": 2, "trzech": 3, "czterech": 4, "pięciu": 5, "sześciu": 6,
    "один": 1, "два": 2, "две": 2, "двух": 2, "три": 3, "трёх": 3, "четыре": 4, "пять": 5, "шесть": 6,
    "десять": 10, "сто": 100, "ста": 100,
}


def _norm_number(raw: str) -> str:
    s = re.sub(r"[ \u00a0\u202f]", "", raw)
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        s = s.replace(",", "")
    elif re.fullmatch(r"\d+,\d+", s):
        s = s.replace(",", ".")
    if re.fullmatch(r"\d+", s):
        return str(int(s))
    if re.fullmatch(r"\d+\.\d+", s):
        return s.rstrip("0").rstrip(".") if "." in s else s
    return s


def numbers(text: str) -> set[str]:
    return {_norm_number(m.group()) for m in _NUMBER.finditer(text)}


def identifiers(text: str) -> set[str]:
    found: set[str] = set()
    for pattern in _IDENTIFIERS:
        for m in pattern.finditer(text):
            value = (m.group(1) if pattern.groups else m.group()).strip().rstrip(".")
            if len(value) > 1:
                found.add(value)
    return found


def _source_numbers(text: str) -> set[str]:
    words = {w.lower() for w in re.findall(r"\w+", text)}
    return numbers(text) | {str(v) for w, v in _WORD_NUMBERS.items() if w in words}


def _has_identifier(source: str, ident: str) -> bool:
    return re.search(r"(?<![\w])" + re.escape(ident) + r"(?![\w])", source) is not None


def _named(sentence: str) -> bool:
    """A capitalised word inside the sentence (not its first word): a name."""
    words = re.findall(r"\w+", sentence)
    return bool(names(sentence))


def names(sentence: str) -> list[str]:
    """Capitalised words after the first one (names: Spendwise, Grafana, Python), codes and identifiers aside."""
    words = re.findall(r"[^\W\d_]+", sentence)
    return [w for w in words[1:] if len(w) > 1 and w[0].isupper() and not w.isupper()]


def _has_name(source: str, name: str) -> bool:
    """A name is found when its stem (inflection cut off: Krakowie ~ Krakow) starts a word of the source."""
    stem = name[:max(4, len(name) - 3)] if len(name) > 4 else name
    return re.search(r"(?<!\w)" + re.escape(stem), source) is not None


_NEGATION = re.compile(r"\b(?:not|no|never|cannot|can't|don't|doesn't|isn't|aren't|nie|nigdy|не|нет|никогда|нельзя|запрещено)\b",
                       re.I)


def negated(text: str) -> bool:
    return _NEGATION.search(text) is not None


# ---- words ----

_STOP = frozenset("""
a an the and or but if of to in on at by for with from as is are was were be been being it its this that these those
there their they them we you your our he she his her i me my not no do does did have has had can could will would
should must may might so than then also only any all each every which who whom what when where how about into out up
over after before under more most such very just here found following according source sources documents
i w we z ze na do o od po za dla że się jest są być to ten ta te tego tej jak czy nie tak oraz lub ale który która
które którzy a u przez przy pod nad może musi można trzeba jego jej ich go im już także tylko według źródła źródło
и в во на с со к ко о об от до по за для что это как не да или но а же ли бы у из при под над так также только
его её их он она они мы вы есть быть был была были может можно нужно должен должны который которая которые
согласно источнику источник
""".split())


def language(text: str) -> str:
    if re.search(r"[а-яё]", text, re.I):
        return "ru"
    if re.search(r"[ąćęłńóśźż]", text, re.I) or re.search(r"\b(?:jest|się|nie|oraz|przez|dla|są)\b", text, re.I):
        return "pl"
    return "en"


def stems(text: str) -> set[str]:
    out = set()
    for w in re.findall(r"[^\W\d_]+", MARKER.sub(" ", text).lower()):
        if w in _STOP or len(w) < 3:
            continue
        if re.fullmatch(r"[a-z]+", w):
            w = re.sub(r"(?:ing|ed|es|s)$", "", w) if len(w) > 4 else w
        out.add(w[:STEM])
    return out


def _windows(source: str) -> list[tuple[int, int]]:
    sentences = split_sentences(source)
    spans = []
    for i in range(len(sentences)):
        for size in range(1, WINDOW + 1):
            if i + size <= len(sentences):
                spans.append((sentences[i].start, sentences[i + size - 1].end))
    return spans or [(0, len(source))]


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    na = math.sqrt(sum(x * x for x in a)) or 1.0
    nb = math.sqrt(sum(y * y for y in b)) or 1.0
    return dot / (na * nb)


def facts(sentence: str) -> tuple[set[str], set[str]]:
    """(numbers, identifiers) stated by a sentence, its [n] markers left out."""
    text = MARKER.sub(" ", sentence)
    idents = identifiers(text)
    nums = numbers(_CODE.sub(" ", text))
    return nums, idents


def check_sentence(sentence: Sentence, sources: list[str], embed: Embed | None = None,
                   min_overlap: float = MIN_OVERLAP, min_cosine: float = MIN_COSINE) -> CitationCheck:
    nums, idents = facts(sentence.text)
    cited = [n for n in sentence.markers if 1 <= n <= len(sources)]

    def result(status: str, supported: bool | None, span: Span | None = None, score: float = 0.0,
               missing: list[str] | None = None) -> CitationCheck:
        return CitationCheck(sentence.text, sentence.start, sentence.end, list(sentence.markers), supported, status,
                             span, round(score, 4), missing or [])

    has_facts = bool(nums or idents or _named(MARKER.sub(" ", sentence.text))
                     or any(w.lower() in _WORD_NUMBERS for w in re.findall(r"\w+", sentence.text)))
    if not sentence.markers:
        return result("uncited" if has_facts else "no_claim", None)
    if not cited:
        return result("unsupported", False, missing=[f"[{n}]" for n in sentence.markers])
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
    cross = language(MARKER.sub(" ", sentence.text)) != language(sources[n - 1])
    cosine = None
    if embed is not None:
        vectors = embed([MARKER.sub(" ", sentence.text).strip(), window])
        cosine = _cosine(vectors[0], vectors[1])
    if missing:
        return result("unsupported", False, span, min(overlap, 0.5) * 0.5, missing)
    if not cross and NEGATION_CHECK:
        clauses = [c for c in re.split(r"[;,:—–]|\s-\s", window) if c.strip()] or [window]
        closest = max(clauses, key=lambda c: len(words & stems(c)) / (1 + len(stems(c))) ** 0.5)
        if negated(plain) != negated(closest):
            return result("unsupported", False, span, overlap * 0.5, ["negation"])
    if cross:
        ok = bool(nums or idents) and (cosine is None or cosine >= min_cosine)
        score = cosine if cosine is not None else (0.75 if ok else 0.0)
    else:
        ok = overlap >= min_overlap or (cosine is not None and cosine >= min_cosine)
        score = max(overlap, cosine or 0.0)
    return result("supported" if ok else "unsupported", ok, span, score)


def check(answer_text: str, sources: list[str], embed: Embed | None = None,
          min_overlap: float = MIN_OVERLAP, min_cosine: float = MIN_COSINE) -> list[CitationCheck]:
    """One check per sentence of `answer_text`; `sources[n-1]` is the text of source [n]."""
    return [check_sentence(s, sources, embed, min_overlap, min_cosine) for s in split_sentences(answer_text)]
