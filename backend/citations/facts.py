"""What a sentence states that can be checked exactly (numbers, identifiers, names, polarity) and its words."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import lru_cache

from backend.citations.sentences import _CODE, MARKER, split_sentences

STEM = 5  # words are compared by their first STEM characters (light stemming for Polish and Russian inflection)
WINDOW = 3  # a span is 1 to WINDOW consecutive sentences of a source


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
    "trzech": 3, "czterech": 4, "pięciu": 5, "sześciu": 6,
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


# The same source windows are read for every sentence of an answer (and, attributing, for every source): their
# words, numbers and sentence windows are computed once. Pure functions of a string; frozensets, so nothing cached
# can be changed by a caller.
_CACHE = 8192


@lru_cache(maxsize=_CACHE)
def _source_numbers(text: str) -> frozenset[str]:
    words = {w.lower() for w in re.findall(r"\w+", text)}
    return frozenset(numbers(text) | {str(v) for w, v in _WORD_NUMBERS.items() if w in words})


def _has_identifier(source: str, ident: str) -> bool:
    return re.search(r"(?<![\w])" + re.escape(ident) + r"(?![\w])", source) is not None


def _named(sentence: str) -> bool:
    """A capitalised word inside the sentence (not its first word): a name."""
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
                       re.IGNORECASE)


def negated(text: str) -> bool:
    return _NEGATION.search(text) is not None


# ---- words ----

_STOP = frozenset(["a", "an", "the", "and", "or", "but", "if", "of", "to", "in", "on", "at", "by", "for", "with", "from", "as", "is", "are", "was", "were", "be", "been", "being", "it", "its", "this", "that", "these", "those", "there", "their", "they", "them", "we", "you", "your", "our", "he", "she", "his", "her", "i", "me", "my", "not", "no", "do", "does", "did", "have", "has", "had", "can", "could", "will", "would", "should", "must", "may", "might", "so", "than", "then", "also", "only", "any", "all", "each", "every", "which", "who", "whom", "what", "when", "where", "how", "about", "into", "out", "up", "over", "after", "before", "under", "more", "most", "such", "very", "just", "here", "found", "following", "according", "source", "sources", "documents", "i", "w", "we", "z", "ze", "na", "do", "o", "od", "po", "za", "dla", "że", "się", "jest", "są", "być", "to", "ten", "ta", "te", "tego", "tej", "jak", "czy", "nie", "tak", "oraz", "lub", "ale", "który", "która", "które", "którzy", "a", "u", "przez", "przy", "pod", "nad", "może", "musi", "można", "trzeba", "jego", "jej", "ich", "go", "im", "już", "także", "tylko", "według", "źródła", "źródło", "и", "в", "во", "на", "с", "со", "к", "ко", "о", "об", "от", "до", "по", "за", "для", "что", "это", "как", "не", "да", "или", "но", "а", "же", "ли", "бы", "у", "из", "при", "под", "над", "так", "также", "только", "его", "её", "их", "он", "она", "они", "мы", "вы", "есть", "быть", "был", "была", "были", "может", "можно", "нужно", "должен", "должны", "который", "которая", "которые", "согласно", "источнику", "источник"])


def language(text: str) -> str:
    if re.search(r"[а-яё]", text, re.IGNORECASE):
        return "ru"
    if re.search(r"[ąćęłńóśźż]", text, re.IGNORECASE) or re.search(r"\b(?:jest|się|nie|oraz|przez|dla|są)\b", text, re.IGNORECASE):
        return "pl"
    return "en"


@lru_cache(maxsize=_CACHE)
def stems(text: str) -> frozenset[str]:
    out = set()
    for w in re.findall(r"[^\W\d_]+", MARKER.sub(" ", text).lower()):
        if w in _STOP or len(w) < 3:
            continue
        if re.fullmatch(r"[a-z]+", w):
            w = re.sub(r"(?:ing|ed|es|s)$", "", w) if len(w) > 4 else w
        out.add(w[:STEM])
    return frozenset(out)


@lru_cache(maxsize=256)
def _windows(source: str) -> tuple[tuple[int, int], ...]:
    sentences = split_sentences(source)
    spans = []
    for i in range(len(sentences)):
        for size in range(1, WINDOW + 1):
            if i + size <= len(sentences):
                spans.append((sentences[i].start, sentences[i + size - 1].end))
    return tuple(spans) or ((0, len(source)),)


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
