"""The README's configuration tables are the settings model's: regenerated, not edited by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from pushstr import config_reference
from pushstr.config_reference import REGENERATE, marked_blocks, tables, update

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_tables_match_the_settings_model() -> None:
    found = marked_blocks(README.read_text(encoding="utf-8"))
    expected = tables()
    stale = [name for name in expected if found.get(name) != expected[name]]
    unknown = sorted(set(found) - set(expected))
    if stale or unknown:
        shown = "\n\n".join(
            f"<!-- config:{name}:start -->\n{expected[name]}\n<!-- config:{name}:end -->" for name in stale
        )
        pytest.fail(
            f"README.md configuration tables differ from the settings model (stale: {stale}, unknown markers: "
            f"{unknown}); regenerate them with `{REGENERATE}`. Expected:\n\n{shown}"
        )


class _Inner(BaseModel):
    flag: bool = Field(False, description="a flag")


class _Sample(BaseModel):
    path: Path = Field(Path("./data"), description="a directory")
    nothing: str | None = Field(None, description="unset | empty")
    words: list[str] = Field(default_factory=lambda: ["a", "b"], description="some words")
    ratio: float = Field(2.0, description="a float")
    level: Literal["low", "high"] = Field("low", description="a level")
    needed: int = Field(description="must be set")
    inner: _Inner = Field(_Inner(), description="a subsection")


def test_rows_are_readable() -> None:
    rows = config_reference._table(config_reference._rows(_Sample, "s."))
    assert rows.splitlines()[2:] == [
        "| `s.path` | `./data` | a directory |",
        "| `s.nothing` | — | unset \\| empty |",
        '| `s.words` | `["a", "b"]` | some words |',
        "| `s.ratio` | `2` | a float |",
        "| `s.level` | `low` | a level (one of `low`, `high`) |",
        "| `s.needed` | required | must be set |",
        "| `s.inner.flag` | `false` | a flag |",
    ]


def test_a_field_without_description_is_refused() -> None:
    class Bare(BaseModel):
        x: int = 1

    with pytest.raises(ValueError, match="x has no description"):
        config_reference._rows(Bare, "")


def test_write_replaces_only_the_marked_tables(tmp_path: Path) -> None:
    names = list(tables())
    text = "intro\n" + "".join(
        f"<!-- config:{name}:start -->\nold\n<!-- config:{name}:end -->\nprose\n" for name in names
    )
    readme = tmp_path / "README.md"
    readme.write_text(text, encoding="utf-8")
    assert config_reference.main(["--write", "--readme", str(readme)]) == 0
    written = readme.read_text(encoding="utf-8")
    assert written == update(text)
    assert written.startswith("intro\n") and written.count("prose\n") == len(names)
    assert marked_blocks(written) == tables()
    with pytest.raises(ValueError, match="no markers for"):
        update("no markers here")
