"""Client housekeeping requests: a chat front end's own background prompts (a chat's title, tags, follow-up
suggestions, search queries, autocompletion) sent to the chat's model, `rag/<space>` included.

They are not questions about the documents: answered with retrieval they cost a search and a long prompt,
come back with citations and a sources footer the front end then shows as the title, and, once a
conversation is long, their embedded chat history exceeded the question limit (issue 22). The appliance
answers them with the engine alone, without retrieval or sources, with a small token budget, the chat
history inside them cut (oldest first) to what fits the engine's window.

Recognised by their documented prompts: Open WebUI's default task templates (open_webui/config.py,
`DEFAULT_*_PROMPT_TEMPLATE`, 0.12.4; and context_compaction.py) start with "### Task:" and a fixed first
line, and every one of them carries the chat as `<chat_history>...</chat_history>`. A prompt that starts with
"### Task:" and carries a `<chat_history>` block is taken as one too (a customised template of the same form).
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator

from backend.answers import AnswerStreamEvent
from backend.rag import RagService, prompt_limit

TASK_HEADER = "### Task:"
# The first line after "### Task:" of Open WebUI's default templates -> the task's name.
OPEN_WEBUI_TASKS = {
    "Generate a concise title summarizing the chat history.": "title",
    "Generate 1-3 broad tags categorizing the main themes of the chat history": "tags",
    "Predict 3-5 useful messages this user might naturally send next": "follow_ups",
    "Analyze the chat history to determine the necessity of generating search queries": "queries",
    "You are an autocompletion system.": "autocomplete",
    "Generate a detailed prompt for am image generation task": "image_prompt",
    "Summarize the conversation history that will be compacted": "compaction",
    # Earlier Open WebUI releases (0.5-0.6) worded two of them differently.
    "Generate a concise, 3-5 word title with an emoji summarizing the chat history.": "title",
    "Suggest 3-5 relevant follow-up questions or prompts": "follow_ups",
}
# The most a housekeeping answer may use (a title, a few tags, five follow-up suggestions fit easily).
TASK_MAX_TOKENS = 512
_HISTORY = re.compile(r"(<chat_history>\n?)(.*?)(\n?</chat_history>)", re.S)


def client_task(text: str) -> str | None:
    """The housekeeping task a user message asks for ('title', 'tags', ..., 'other'), or None for a question."""
    body = text.lstrip()
    if not body.startswith(TASK_HEADER):
        return None
    first = body[len(TASK_HEADER):].strip().split("\n", 1)[0].strip()
    for start, task in OPEN_WEBUI_TASKS.items():
        if first.startswith(start):
            return task
    return "other" if "<chat_history>" in body else None


def fit_task_prompt(prompt: str, max_bytes: int) -> str:
    """The prompt in at most `max_bytes` UTF-8 bytes (an upper bound on its tokens): the chat history inside it
    loses its oldest part first; a prompt without one (or whose instructions alone are too long) keeps its start
    and its end (the instructions, and the text an autocompletion continues)."""
    if len(prompt.encode("utf-8")) <= max_bytes:
        return prompt
    match = _HISTORY.search(prompt)
    if match:
        rest = len((prompt[: match.start(2)] + prompt[match.end(2):]).encode("utf-8"))
        room = max_bytes - rest - 4
        if room > 0:
            history = match.group(2).encode("utf-8")[-room:].decode("utf-8", "ignore")
            return prompt[: match.start(2)] + "…\n" + history + prompt[match.end(2):]
    data = prompt.encode("utf-8")
    half = max(max_bytes // 2 - 4, 0)
    return data[:half].decode("utf-8", "ignore") + "\n…\n" + data[len(data) - half:].decode("utf-8", "ignore")


async def task_answer(rag: RagService, prompt: str, max_tokens: int | None, temperature: float | None
                      ) -> AsyncGenerator[AnswerStreamEvent, None]:
    """The engine's answer to a housekeeping prompt (no retrieval, no sources): at most TASK_MAX_TOKENS, the
    prompt fitted to the engine's window. Asks the engine for its window first (an engine that is down is
    the caller's error status, as for a question)."""
    max_tokens = min(max_tokens or TASK_MAX_TOKENS, TASK_MAX_TOKENS)
    info = await rag.llm.model_info()
    fitted = fit_task_prompt(prompt, max(prompt_limit(info.context_length, max_tokens), 0))
    return rag.chat([{"role": "user", "content": fitted}], max_tokens, temperature)
