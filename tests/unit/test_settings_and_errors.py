"""Settings are read from the environment and env files; errors carry status, type and exit code."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from backend.errors import (
    EXIT_USAGE,
    BackendUnreachable,
    CorruptDocument,
    FileTooLarge,
    InvalidSpace,
    StoreLocked,
    exit_code_for,
)
from backend.domain import normalize_doc_path, validate_space
from backend.settings import load_settings


def test_env_file_and_environment(tmp_path, monkeypatch):
    env_file = tmp_path / "custom.env"
    env_file.write_text("DATA_DIR=/srv/rag\nCHUNK_TOKENS=120\nQDRANT_URL=http://qdrant:6333/\nMODEL_CACHE_DIR=/cache\n")
    monkeypatch.setenv("CHUNK_OVERLAP", "10")
    settings = load_settings(env_file)
    assert str(settings.data_dir) == "/srv/rag" and settings.chunk_tokens == 120 and settings.chunk_overlap == 10
    assert settings.qdrant_url == "http://qdrant:6333"  # trailing slash stripped
    assert str(settings.model_cache_dir) == "/cache"
    empty = tmp_path / "empty.env"
    empty.write_text("")
    assert str(load_settings(empty, data_dir="/d").model_cache_dir) == "/d/models"


def test_env_file_from_env_file_variable_missing_file_and_empty_values(tmp_path, monkeypatch):
    env_file = tmp_path / "stack.env"
    env_file.write_text("LLM_BACKEND=ollama\nCHUNK_TOKENS=\nOLLAMA_MODEL=qwen2.5:7b\n")
    monkeypatch.setenv("ENV_FILE", str(env_file))
    monkeypatch.setenv("ANSWER_MAX_TOKENS", "")  # as compose forwards a knob the env file leaves out
    settings = load_settings()
    assert settings.llm_backend == "ollama" and settings.ollama_model == "qwen2.5:7b"
    assert settings.chunk_tokens == 200 and settings.answer_max_tokens == 512  # empty = the default
    monkeypatch.setenv("OLLAMA_MODEL", "llama3.2:3b")  # the environment wins over the file
    assert load_settings().ollama_model == "llama3.2:3b"
    with pytest.raises(ValueError, match="env file not found"):
        load_settings(tmp_path / "none.env")


def test_invalid_settings_are_rejected(monkeypatch):
    monkeypatch.setenv("CHUNK_TOKENS", "50")
    monkeypatch.setenv("CHUNK_OVERLAP", "50")
    with pytest.raises(ValidationError, match="CHUNK_OVERLAP"):
        load_settings()
    monkeypatch.setenv("CHUNK_OVERLAP", "5")
    monkeypatch.setenv("EMBED_BACKEND", "tensorflow")
    with pytest.raises(ValidationError):
        load_settings()


def test_error_statuses_types_and_exit_codes():
    assert (CorruptDocument("x").status_code, CorruptDocument("x").error_type) == (422, "corrupt_document")
    assert FileTooLarge("x").status_code == 413 and InvalidSpace("x").status_code == 400
    assert StoreLocked("x").to_dict() == {"error": {"type": "store_locked", "message": "x"}}
    assert exit_code_for(InvalidSpace("x")) == EXIT_USAGE
    assert exit_code_for(StoreLocked("x")) == 3 and exit_code_for(BackendUnreachable("x")) == 4


@pytest.mark.parametrize("space", ["demo", "team-a", "Proj_2.v1", "a" * 64])
def test_valid_spaces(space):
    assert validate_space(space) == space


@pytest.mark.parametrize("space", ["", "-x", "a b", "../x", "~staging:demo", "a" * 65, "zażółć"])
def test_invalid_spaces(space):
    with pytest.raises(InvalidSpace):
        validate_space(space)


def test_document_paths_are_normalised_and_never_escape():
    assert normalize_doc_path("guides\\setup.md") == "guides/setup.md"
    assert normalize_doc_path("/abs/./a.txt") == "abs/a.txt"
    for bad in ["../etc/passwd", "a/../../b", "", "a\x00b", "x" * 600]:
        with pytest.raises(Exception) as info:
            normalize_doc_path(bad)
        assert info.value.status_code == 400
