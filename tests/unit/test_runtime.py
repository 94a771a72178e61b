"""Runtime's life cycle over fakes: what start() starts, the order close() shuts down in, and what it owns.

The order matters: the jobs stop first (a file in hand is committed while the store is still open), the
registration file goes before the store closes (a CLI that finds no registration opens the store itself),
and only what the runtime built or adopted is closed.
"""

from __future__ import annotations

import asyncio

import pytest

from backend.ingest.optimizer import BackgroundOptimizer
from backend.ingest.pipeline import IngestPipeline
from backend.runtime import Runtime
from backend.settings import Settings


class Recorder:
    """A component that writes what is done to it into the shared log."""

    def __init__(self, log: list, name: str):
        self.log, self.name = log, name

    def close(self) -> None:
        self.log.append(f"{self.name}.close")


class FakeStore(Recorder):
    kind = "edge"

    def __init__(self, log: list, registration):
        super().__init__(log, "store")
        self.registration = registration

    def close(self) -> None:
        self.log.append("store.close" + (" (still registered)" if self.registration.exists() else ""))


class FakeJobs(Recorder):
    def start(self) -> None:
        self.log.append(f"{self.name}.start")

    def stop(self, timeout_s: float) -> None:
        self.log.append(f"{self.name}.stop({timeout_s:g})")


class FakeOptimizer(Recorder):
    def start(self) -> None:
        self.log.append("optimizer.start")

    def stop(self) -> None:
        self.log.append("optimizer.stop")


class FakeLLM(Recorder):
    engine = "fake"

    async def aclose(self) -> None:
        self.log.append(f"{self.name}.aclose")


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path / "data", shutdown_timeout_s=7)


def make_runtime(settings: Settings, log: list, *, owns_components: bool = True) -> Runtime:
    runtime = Runtime(
        settings, Recorder(log, "embedder"), FakeStore(log, settings.backend_registration_file), object(), object(),
        Recorder(log, "pipeline"), cross_embedder=Recorder(log, "cross_embedder"),
        optimizer=FakeOptimizer(log, "optimizer"), llm=FakeLLM(log, "llm"), owns_components=owns_components,
    )
    runtime.jobs = FakeJobs(log, "jobs")
    return runtime


OWNED_SHUTDOWN = [
    "jobs.stop(7)", "llm.aclose", "optimizer.stop", "pipeline.close", "store.close", "embedder.close",
    "cross_embedder.close",
]


def test_start_starts_the_optimizer_then_the_job_worker(settings):
    log: list[str] = []
    make_runtime(settings, log).start()
    assert log == ["optimizer.start", "jobs.start"]


def test_aclose_stops_jobs_then_the_llm_then_unregisters_then_closes_the_components(settings):
    log: list[str] = []
    runtime = make_runtime(settings, log)
    runtime.adopt("embedder", "cross_embedder", "llm")
    runtime.start()
    runtime.advertise()
    assert settings.backend_registration_file.exists()
    log.clear()
    asyncio.run(runtime.aclose())
    assert log == OWNED_SHUTDOWN  # the store closed with the registration already gone
    assert not settings.backend_registration_file.exists()


def test_close_keeps_the_same_order_outside_an_event_loop(settings):
    log: list[str] = []
    runtime = make_runtime(settings, log)
    runtime.adopt("embedder", "cross_embedder", "llm")
    runtime.start()
    log.clear()
    runtime.close()
    assert log == OWNED_SHUTDOWN


def test_what_was_injected_is_not_closed_but_the_store_and_pipeline_are(settings):
    log: list[str] = []
    runtime = make_runtime(settings, log)  # nothing adopted: embedder, cross embedder and LLM client were given
    runtime.close()  # never started: no job worker to stop
    assert log == ["optimizer.stop", "pipeline.close", "store.close"]


def test_a_borrower_stops_its_own_work_and_closes_none_of_the_shared_components(settings):
    log: list[str] = []
    owner = make_runtime(settings, log)
    borrower = owner.borrow(settings.model_copy(update={"shutdown_timeout_s": 3}), FakeLLM(log, "app_llm"))
    borrower.jobs = FakeJobs(log, "app_jobs")
    borrower.adopt("llm", "embedder")  # the app built this LLM client; the embedder stays the owner's all the same
    assert (borrower.store, borrower.pipeline, borrower.optimizer) == (owner.store, owner.pipeline, owner.optimizer)
    borrower.start()
    asyncio.run(borrower.aclose())
    assert log == ["optimizer.start", "app_jobs.start", "app_jobs.stop(3)", "app_llm.aclose", "optimizer.stop"]


def test_the_llm_client_is_built_on_first_use_and_then_owned(settings, monkeypatch):
    import backend.runtime

    log: list[str] = []
    monkeypatch.setattr(backend.runtime, "create_llm_client", lambda _settings: FakeLLM(log, "built_llm"))
    runtime = Runtime(
        settings, Recorder(log, "embedder"), FakeStore(log, settings.backend_registration_file), object(), object(),
        Recorder(log, "pipeline"), optimizer=FakeOptimizer(log, "optimizer"),
    )
    runtime.close()
    assert "built_llm.aclose" not in log  # never used, never built
    log.clear()
    runtime = Runtime(
        settings, Recorder(log, "embedder"), FakeStore(log, settings.backend_registration_file), object(), object(),
        Recorder(log, "pipeline"), optimizer=FakeOptimizer(log, "optimizer"),
    )
    assert runtime.llm.name == "built_llm"
    runtime.close()
    assert log == ["built_llm.aclose", "optimizer.stop", "pipeline.close", "store.close"]


def test_adopting_an_unknown_component_is_an_error(settings):
    with pytest.raises(ValueError):
        make_runtime(settings, []).adopt("store")


class CountingStore:
    def __init__(self):
        self.optimized = 0

    def optimize(self) -> None:
        self.optimized += 1


class FakeIndex:
    def delete(self, doc_id: str) -> int:
        return 3


def test_a_delete_through_the_pipeline_schedules_optimisation_and_a_cli_runs_it_itself():
    store = CountingStore()
    optimizer = BackgroundOptimizer(store)
    pipeline = IngestPipeline(object(), FakeIndex(), object(), max_bytes=1, parsing=Recorder([], "parsing"), on_write=optimizer.schedule)
    assert not optimizer.pending and optimizer.optimize_now() is False
    assert pipeline.delete("doc") == 3
    assert optimizer.pending
    assert optimizer.optimize_now() is True and store.optimized == 1
    assert not optimizer.pending


def test_a_failing_write_hook_does_not_fail_the_write():
    def broken() -> None:
        raise RuntimeError("hook")

    pipeline = IngestPipeline(object(), FakeIndex(), object(), max_bytes=1, parsing=Recorder([], "parsing"), on_write=broken)
    assert pipeline.delete("doc") == 3
