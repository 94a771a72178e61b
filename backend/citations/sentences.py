"""Sentences of an answer, with their character offsets and the [n] markers each carries."""

from __future__ import annotations

import re
from dataclasses import dataclass

MARKER = re.compile(r"(?<!\w)\s*\[(\d+(?:\s*,\s*\d+)*)\]")
_CODE = re.compile(r"`[^`\n]+`")
_BULLET = re.compile(r"^[ \t]*(?:[-*•+]|\d{1,3}[.)])[ \t]+")
ABBREVIATIONS = frozenset(["e.g", "i.e", "etc", "vs", "cf", "approx", "no", "nr", "dr", "mr", "mrs", "ms", "prof", "inc", "ltd", "st", "fig", "eq", "ca", "np", "tzn", "itd", "itp", "m.in", "ok", "godz", "tj", "wg", "zob", "pkt", "ul", "prof", "tys", "mln", "mld", "r", "т.е", "т.д", "т.п", "т.к", "см", "г", "гг", "др", "стр", "рис", "ок", "тыс", "млн", "млрд", "руб", "им"])
_SENTENCE_END = re.compile(r"[.!?…]+[\"'»”)]*")


@dataclass(frozen=True)
class Sentence:
    text: str
    start: int
    end: int
    markers: tuple[int, ...] = ()


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
