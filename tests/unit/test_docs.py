"""The README documents every setting."""

from __future__ import annotations

from pathlib import Path

from replaywatch.config import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_readme() -> None:
    missing = [
        f"REPLAYWATCH_{name.upper()}" for name in Settings.model_fields if f"REPLAYWATCH_{name.upper()}`" not in README
    ]
    assert missing == []
