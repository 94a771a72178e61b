"""What the /v1 routes take and give: OpenAI's request bodies (and the parameters refused), and the responses
documented in /docs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from backend.api.openai.errors import unsupported
from backend.api.schemas import AskSource


# -- documented responses -------------------------------------------------------------------------------------
class OpenAIErrorBody(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error | authentication_error | permission_error | server_error")
    param: str | None = Field(None, description="The request field at fault, when one is.")
    code: str | None = Field(None, description="The appliance's error type (llm_unavailable, ...) or model_not_found.")


class OpenAIErrorOut(BaseModel):
    error: OpenAIErrorBody


class ModelOut(BaseModel):
    id: str = Field(description="rag/<space>, or the engine's model (OPENAI_EXPOSE_ENGINE_MODEL).")
    object: Literal["model"]
    created: int = Field(description="Unix time the space's first document was indexed (0: unknown).")
    owned_by: str = Field(description="rag-appliance for spaces, the engine's name for its model.")


class ModelListOut(BaseModel):
    object: Literal["list"]
    data: list[ModelOut]


class CompletionMessage(BaseModel):
    role: Literal["assistant"]
    content: str
    refusal: None = None


class CompletionChoice(BaseModel):
    index: int
    message: CompletionMessage
    logprobs: None = None
    finish_reason: Literal["stop", "length"]


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletionOut(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    system_fingerprint: None = None
    choices: list[CompletionChoice]
    usage: CompletionUsage
    sources: list[AskSource] = Field(description="Extension: the sources the answer's [n] refer to (as in POST /ask).")
    rag: dict[str, Any] | None = Field(
        None, description="Extension (rag/<space> models): engine, model, grounded, citations (the claim check), cited, invalid_citations, context, timings (as in POST /ask)."
    )


SSE_CHUNK = {"type": "string", "description": "`data: <chat.completion.chunk JSON>` lines, then `data: [DONE]`"}
ERROR_STATUSES = (400, 401, 403, 404, 500, 502, 503, 504)
V1_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": OpenAIErrorOut} for code in ERROR_STATUSES}
COMPLETION_RESPONSES: dict[int | str, dict[str, Any]] = {
    **V1_ERRORS,
    200: {"model": ChatCompletionOut, "content": {"text/event-stream": {"schema": SSE_CHUNK}},
          "description": "A chat.completion, or chat.completion.chunk Server-Sent Events when `stream` is true."},
}


# -- request bodies -------------------------------------------------------------------------------------------
class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class RagOptions(BaseModel):
    """Extension (`extra_body={"rag": {...}}` in the SDK): retrieval knobs of `POST /ask` and the footer."""

    top_k: int = Field(5, description="Chunks to retrieve (1..50, as on POST /ask; checked by RagService.ask).")
    mode: Literal["dense", "sparse", "hybrid"] | None = Field(None, description="Retrieval mode; default SEARCH_MODE.")
    rerank: bool | None = Field(None, description="Rerank with RERANK_MODEL; default: when one is configured.")
    sources_footer: bool = Field(True, description="Append a readable 'Sources:' list of the cited sources to the answer.")


class ChatCompletionBody(BaseModel):
    """OpenAI's chat completion request; the parameters this server cannot honour are refused (400)."""

    model_config = ConfigDict(extra="allow")  # front ends send fields of their own: ignored

    model: str = Field(..., description="`rag/<space>`, or the engine's model when OPENAI_EXPOSE_ENGINE_MODEL is on.")
    messages: list[ChatMessage] = Field(..., min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1, le=32768)
    max_completion_tokens: int | None = Field(None, ge=1, le=32768, description="Wins over max_tokens.")
    temperature: float | None = Field(None, ge=0, le=2)
    n: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    modalities: list[str] | None = None
    audio: Any = None
    prediction: Any = None
    rag: RagOptions | None = Field(None, description="Extension: retrieval knobs and the sources footer.")

    def check_supported(self) -> None:
        """Refuse (400 unsupported_parameter) what this server cannot do: several choices, a required tool call,
        logprobs, structured output, audio, predicted outputs."""
        if self.n not in (None, 1):
            raise unsupported("n", "n other than 1")
        # Tools are accepted and never called (Open WebUI sends its built-in ones with every request): the answer
        # is an ordinary assistant message, valid for a client that offered tools. Only a request that demands a
        # call cannot be honoured.
        if self.tool_choice not in (None, "none", "auto"):
            raise unsupported("tool_choice", "A tool_choice that requires a tool call (this server never calls tools)")
        if self.function_call not in (None, "none", "auto"):
            raise unsupported("function_call", "A function_call that requires a call (this server never calls functions)")
        if self.logprobs or self.top_logprobs:
            raise unsupported("logprobs" if self.logprobs else "top_logprobs", "logprobs")
        if self.response_format and self.response_format.get("type", "text") != "text":
            raise unsupported("response_format", f"response_format {self.response_format.get('type')!r}")
        if self.modalities and set(self.modalities) != {"text"} or self.audio is not None:
            raise unsupported("modalities" if self.audio is None else "audio", "Audio output")
        if self.prediction is not None:
            raise unsupported("prediction", "Predicted outputs")


class CompletionBody(BaseModel):
    """OpenAI's legacy completion request (`/v1/completions`): the prompt is the question (a prompt written from
    a chat, `user: ...\\nassistant:` as LlamaIndex's `OpenAILike` does, is read as that chat)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(..., description="`rag/<space>`, or the engine's model when OPENAI_EXPOSE_ENGINE_MODEL is on.")
    prompt: str | list[Any] = Field(..., description="One prompt (a string, or a list of one string).")
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1, le=32768)
    temperature: float | None = Field(None, ge=0, le=2)
    n: int | None = None
    best_of: int | None = None
    echo: bool | None = None
    logprobs: int | None = None
    suffix: str | None = None
    rag: RagOptions | None = Field(None, description="Extension: retrieval knobs and the sources footer.")

    def the_prompt(self) -> str:
        """The one text prompt; several prompts, token arrays and what this server cannot do are refused."""
        if self.n not in (None, 1) or self.best_of not in (None, 1):
            raise unsupported("n" if self.n not in (None, 1) else "best_of", "More than one completion per request")
        if self.echo:
            raise unsupported("echo", "echo")
        if self.logprobs:
            raise unsupported("logprobs", "logprobs")
        if self.suffix:
            raise unsupported("suffix", "suffix (insertion)")
        prompt = self.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1 or not isinstance(prompt[0], str):
                raise unsupported("prompt", "A prompt other than one string (several prompts, token arrays)")
            prompt = prompt[0]
        return prompt


class EmbeddingBody(BaseModel):
    """OpenAI's embeddings request, served by the appliance's own embedder (EMBED_MODEL)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(..., description="The embedder's name (EMBED_MODEL), or any `rag/<space>` the key covers.")
    input: str | list[Any] = Field(..., description="A string or a list of strings (token arrays are refused).")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, description="Accepted only when it is the embedder's own dimension.")
    input_type: Literal["query", "document"] = Field(
        "query", description="Extension: embed as a query or as a document (E5 models encode them differently)."
    )


class EmbeddingOut(BaseModel):
    object: Literal["list"]
    data: list[dict[str, Any]] = Field(description="`{object: embedding, index, embedding}` per input, in order.")
    model: str
    usage: dict[str, int] = Field(description="`prompt_tokens` and `total_tokens`, as the embedder's tokenizer counts.")
