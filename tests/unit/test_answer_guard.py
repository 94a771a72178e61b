"""The answer's deadline (issue 24, finding 6) on plain async generators: AnswerTimeout once the total time is
spent, whichever step it is spent in, and the answer's generators closed (which is what closes an engine's
request); an answer's own errors pass through unchanged."""

from __future__ import annotations

import asyncio

import pytest

from backend import answers
from backend.api.answer_guard import final_answer, with_deadline
from backend.errors import AnswerTimeout, LLMBadResponse

DEADLINE_S = 0.3


class Answer:
    """An answer whose events come `gap_s` apart, forever unless `events` is given; records its closing."""

    def __init__(self, gap_s: float, events: int | None = None, fail: Exception | None = None) -> None:
        self.gap_s, self.events, self.fail, self.closed, self.sent = gap_s, events, fail, False, 0

    async def __call__(self):
        try:
            while self.events is None or self.sent < self.events:
                await asyncio.sleep(self.gap_s)
                self.sent += 1
                yield answers.TokenEvent("x")
            if self.fail:
                raise self.fail
            yield answers.AnswerEvent(answers.Answer("x" * self.sent, "fake", None))
        finally:
            self.closed = True


def run(coro):
    return asyncio.run(coro)


def test_a_stream_that_never_ends_is_cut_at_the_deadline_and_closed():
    answer = Answer(gap_s=0.01)  # tokens keep coming: no per-read timeout would ever fire

    async def consume():
        return await final_answer(with_deadline(answer(), DEADLINE_S))

    with pytest.raises(AnswerTimeout, match="ANSWER_TIMEOUT_S"):
        run(consume())
    assert answer.closed and answer.sent > 5


def test_a_silent_first_step_is_cut_too_and_a_timely_answer_is_untouched():
    silent = Answer(gap_s=30, events=1)  # retrieval or the first token taking too long
    with pytest.raises(AnswerTimeout):
        run(final_answer(_later(with_deadline, silent(), DEADLINE_S)))
    assert silent.closed

    quick = Answer(gap_s=0.001, events=3)
    assert run(final_answer(_later(with_deadline, quick(), DEADLINE_S))).text == "xxx"
    assert quick.closed

    failing = Answer(gap_s=0.001, events=1, fail=LLMBadResponse("the LLM engine (vLLM) failed mid-answer"))
    with pytest.raises(LLMBadResponse):
        run(final_answer(_later(with_deadline, failing(), DEADLINE_S)))


async def _later(wrap, events, timeout_s):
    """`wrap(events, timeout_s)` created inside the running loop, as the routes do, then iterated."""
    async for event in wrap(events, timeout_s):
        yield event
