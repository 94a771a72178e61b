"""The golden sets' matching rules, shared by `cli.eval` (retrieval) and `cli.eval_answers` (whole answers)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_MARKUP = re.compile(r"[`*]")


def normalize(text: str) -> str:
    """What answer, fact and passage matching compare: markup-free, whitespace collapsed, case folded."""
    return " ".join(_MARKUP.sub("", text).split()).casefold()


@dataclass(frozen=True)
class Answer:
    """Where the supporting passage is: a document path and, optionally, a verbatim piece of its text."""

    path: str
    passage: str | None = None

    def matches(self, path: str, text: str) -> bool:
        return path == self.path and (self.passage is None or normalize(self.passage) in normalize(text))
