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
# When the model cited nothing (small models often do not), the footer lists every source it was given.
CONSULTED_HEADING = "\n\nSources consulted:\n"
# Retrieval's query when the question is longer than the retriever takes (a conversation or a document pasted
# into one message): its last lines, up to this many characters. The model still gets the whole message, as
# far as its window allows (rag.py).
QUERY_MAX_CHARS = 1000


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
    for heading in (SOURCES_HEADING, CONSULTED_HEADING):
        cut = text.rfind(heading)
        if cut >= 0 and all(re.match(r"- \[\d+\] ", line) for line in text[cut + len(heading):].strip().splitlines()):
            text = text[:cut]
            break
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


# A chat written out as one prompt by clients of the legacy completions API (LlamaIndex's generic
# `messages_to_prompt`: "system: ...", "user: ...", "assistant: ..." lines, ending with "assistant: ").
_ROLE_LINE = re.compile(r"^(system|user|assistant): ?", re.M)


def prompt_conversation(prompt: str) -> list[ChatMessage]:
    """A legacy completion's prompt as chat messages: the chat it writes out (when it ends with an empty
    'assistant:' turn and names a user turn), or one user message."""
    stripped = prompt.rstrip()
    if stripped.endswith("assistant:") and re.match(r"(system|user): ", prompt):
        parts = _ROLE_LINE.split(stripped[: -len("assistant:")])
        turns = [(parts[i], parts[i + 1].strip()) for i in range(1, len(parts) - 1, 2)]
        if turns and turns[-1][0] == "user":
            return [ChatMessage(role=role, content=text) for role, text in turns]
    return [ChatMessage(role="user", content=prompt)]


def engine_messages(messages: list[ChatMessage]) -> list[dict]:
    """The conversation as the engine gets it for plain chat (developer messages are system messages)."""
    out = []
    for i, message in enumerate(messages):
        if message.role in ("tool", "function"):
            raise unsupported(f"messages.{i}.role", f"role {message.role!r}")
        out.append({"role": "system" if message.role == "developer" else message.role, "content": _text(message, i)})
    return out


def retrieval_query(question: str) -> str | None:
    """A bounded query for retrieval when the question is too long to search with (None: the question itself):
    its last lines within QUERY_MAX_CHARS, the end of its last line when that alone is longer."""
    if len(question) <= QUERY_MAX_CHARS:
        return None
    kept: list[str] = []
    size = 0
    for line in reversed([line.strip() for line in question.splitlines() if line.strip()]):
        if size + len(line) + 1 > QUERY_MAX_CHARS:
            if not kept:  # one long last line: its end, from a word boundary
                tail = line[-QUERY_MAX_CHARS:]
                kept.append(tail.split(" ", 1)[1] if " " in tail[:80] else tail)
            break
        kept.insert(0, line)
        size += len(line) + 1
    return "\n".join(kept)


def sources_footer(sources: list[Source]) -> str:
    """The sources as a Markdown list for people reading the answer in a chat UI: the cited ones under
    'Sources:', or, when the model cited none, every source it was given under 'Sources consulted:'."""

    def line(s: Source) -> str:
        return f"- [{s.n}] " + s.path + (f", page {s.page}" if s.page else "") + (f" § {s.heading}" if s.heading else "")

    cited = [line(s) for s in sources if s.cited]
    if cited:
        return SOURCES_HEADING + "\n".join(cited)
    return CONSULTED_HEADING + "\n".join(line(s) for s in sources) if sources else ""
