"""A chat's messages as the appliance takes them: the question and the earlier turns kept for a RAG model,
or the whole conversation for the engine's own model (plain chat)."""

from __future__ import annotations

import re

from backend.answers import Source
from backend.api.openai.errors import invalid, unsupported
from backend.api.openai.schemas import ChatMessage
from backend.rag import CITATION

# Earlier turns passed to the model with a question: at most this many messages, and this many characters in
# all (newest kept). Retrieval never sees them; rag.py drops more of them when the model's window is short.
HISTORY_MAX_MESSAGES = 6
HISTORY_MAX_CHARS = 6000
SOURCES_HEADING = "\n\nSources:\n"


def _text(message: ChatMessage, i: int) -> str:
    """A message's text; content parts other than text are refused."""
    if message.content is None or isinstance(message.content, str):
        text = message.content or ""
    else:
        texts = []
        for part in message.content:
            if part.get("type") not in ("text", "input_text") or not isinstance(part.get("text"), str):
                raise unsupported(f"messages.{i}.content", f"content part {part.get('type')!r} (only text)")
            texts.append(part["text"])
        text = "\n".join(texts)
    if any("\ud800" <= ch <= "\udfff" for ch in text):  # JSON can escape one; no engine can encode it
        raise invalid("the message is not valid Unicode (a lone surrogate)", f"messages.{i}.content")
    return text


def _strip_for_history(text: str) -> str:
    """An earlier answer as the model sees it again: without our sources footer and its [n] citations, whose
    numbers referred to another list of sources than the next question's."""
    cut = text.rfind(SOURCES_HEADING)
    if cut >= 0 and all(re.match(r"- \[\d+\] ", line) for line in text[cut + len(SOURCES_HEADING):].strip().splitlines()):
        text = text[:cut]
    return re.sub(r"[ \t]+([.,;:!?])", r"\1", CITATION.sub("", text)).strip()


def split_conversation(messages: list[ChatMessage]) -> tuple[str, list[dict]]:
    """The question (the last message, which must be the user's) and the earlier user/assistant turns kept
    for the model: the newest HISTORY_MAX_MESSAGES within HISTORY_MAX_CHARS. System, developer and tool
    messages are left out: a RAG model has its own instructions."""
    last = len(messages) - 1
    if messages[last].role != "user":
        raise invalid("the last message must be the user's question", "messages")
    question = _text(messages[last], last).strip()
    history: list[dict] = []
    chars = 0
    for i in range(last - 1, -1, -1):
        message = messages[i]
        if message.role not in ("user", "assistant"):
            continue
        text = _text(message, i)
        text = _strip_for_history(text) if message.role == "assistant" else text.strip()
        if not text:
            continue
        if len(history) == HISTORY_MAX_MESSAGES or chars + len(text) > HISTORY_MAX_CHARS:
            break
        history.insert(0, {"role": message.role, "content": text})
        chars += len(text)
    # Some chat templates (Mistral's, Llama 2's) insist that roles alternate, starting with the user: merge
    # repeated roles (an answer that failed leaves two user turns in a row), drop an unanswered last question.
    turns: list[dict] = []
    for turn in history:
        if turns and turns[-1]["role"] == turn["role"]:
            turns[-1]["content"] += "\n\n" + turn["content"]
        else:
            turns.append(turn)
    while turns and turns[0]["role"] != "user":
        turns.pop(0)
    while turns and turns[-1]["role"] != "assistant":
        turns.pop()
    return question, turns


def engine_messages(messages: list[ChatMessage]) -> list[dict]:
    """The conversation as the engine gets it for plain chat (developer messages are system messages)."""
    out = []
    for i, message in enumerate(messages):
        if message.role in ("tool", "function"):
            raise unsupported(f"messages.{i}.role", f"role {message.role!r}")
        out.append({"role": "system" if message.role == "developer" else message.role, "content": _text(message, i)})
    return out


def sources_footer(sources: list[Source]) -> str:
    """The cited sources as a Markdown list under 'Sources:', for people reading the answer in a chat UI."""
    lines = []
    for s in sources:
        if s.cited:
            where = s.path + (f", page {s.page}" if s.page else "") + (f" § {s.heading}" if s.heading else "")
            lines.append(f"- [{s.n}] {where}")
    return SOURCES_HEADING + "\n".join(lines) if lines else ""
