"""The README's list of settings names every setting the operator and the CLI read."""

from pathlib import Path

from steward.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_named_in_the_readme():
    text = README.read_text(encoding="utf-8")
    missing = [
        f"STEWARD_{name.upper()}"
        for name in Settings.model_fields
        if f"`STEWARD_{name.upper()}`" not in text
    ]
    assert not missing, f"README.md does not name {missing}"
