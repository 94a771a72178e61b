"""The OpenAI-compatible API (`/v1/models`, `/v1/chat/completions`), for chat front ends and the OpenAI SDKs.

Every space is a model, `rag/<space>`: a chat completion on it answers the conversation's last user message
from that space exactly as `POST /ask` does ([n] citations, the sources in an extra `sources` field). With
OPENAI_EXPOSE_ENGINE_MODEL on, the engine's own model is listed and served too, as plain chat (no retrieval).

Errors are answered in OpenAI's dialect of backend/api/errors.py, `{"error": {"message", "type", "param",
"code"}}`, with the status the rest of the API uses for the same error (`OpenAIRoute` in errors.py).
docs/openai.md is the user-facing description.

- schemas.py: the request bodies and the documented responses;
- conversation.py: messages -> the question and the earlier turns (RAG), or the engine's messages (plain chat);
- completions.py: an answer's events -> a chat.completion or chat.completion.chunk Server-Sent Events;
- routes.py: the routes.
"""

from backend.api.openai.routes import router

__all__ = ["router"]
