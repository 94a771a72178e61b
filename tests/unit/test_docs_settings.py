"""Every setting is documented: docs/configuration.md names each environment variable of `Settings`."""

from pathlib import Path

from backend.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_setting_is_in_the_configuration_reference():
    text = DOC.read_text(encoding="utf-8")
    missing = [
        (field.alias or name).upper()
        for name, field in Settings.model_fields.items()
        if f"`{(field.alias or name).upper()}`" not in text
    ]
    assert not missing, f"docs/configuration.md does not document {missing}"
