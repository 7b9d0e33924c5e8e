"""The README's configuration tables, rendered from the settings models so that they cannot drift from them.

Each table sits in README.md between `<!-- config:<name>:start -->` and `<!-- config:<name>:end -->`; a test
compares them with `tables()`. `python -m pushstr.config_reference` prints the tables, `--write` rewrites the
marked blocks of README.md in place and leaves everything around them alone.
"""

from __future__ import annotations

import argparse
import re
import sys
import types
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from pushstr.config import APP_CONFIGS, DEFAULT_APP, PLATFORM_TRANSPORTS, AppConfig, Settings

HEADER = "| key | default | meaning |\n|---|---|---|"
REGENERATE = ".venv/bin/python -m pushstr.config_reference --write"
_MARKER = re.compile(r"<!-- config:(?P<name>[\w.]+):start -->\n(?P<body>.*?)\n<!-- config:(?P=name):end -->", re.DOTALL)

Row = tuple[str, str, str]


def _literal(value: Any) -> str:
    """A default as the user would write it: TOML-ish, strings bare at the top level and quoted inside arrays."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Path):
        return str(value) if value.is_absolute() else f"./{value}"
    if isinstance(value, list):
        return "[" + ", ".join(f'"{item}"' if isinstance(item, str) else _literal(item) for item in value) + "]"
    return str(value)


def _default(field: FieldInfo) -> str:
    extra = field.json_schema_extra
    if isinstance(extra, dict) and "readable_default" in extra:
        return f"`{extra['readable_default']}`"
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True, validated_data={})
    return "—" if value is None else f"`{_literal(value)}`"


def _choices(annotation: Any) -> list[str]:
    """The values a Literal or Enum field accepts (an optional one's too), to list them beside its meaning."""
    if get_origin(annotation) in (Union, types.UnionType):
        return [choice for arg in get_args(annotation) if arg is not type(None) for choice in _choices(arg)]
    if get_origin(annotation) is Literal:
        return [str(choice) for choice in get_args(annotation)]
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return [str(member.value) for member in annotation]
    return []


def _meaning(name: str, field: FieldInfo) -> str:
    if not field.description:
        raise ValueError(f"{name} has no description: the reference would have an empty meaning")
    choices = _choices(field.annotation)
    if len(choices) > 1:
        return field.description + " (one of " + ", ".join(f"`{choice}`" for choice in choices) + ")"
    return field.description


def _is_section(field: FieldInfo) -> bool:
    return isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)


def _rows(model: type[BaseModel], prefix: str, skip: frozenset[str] = frozenset()) -> list[Row]:
    """One row per field; nested sections become rows with their dotted keys."""
    rows: list[Row] = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        if _is_section(field):
            rows.extend(_rows(field.annotation, f"{prefix}{name}."))  # type: ignore[arg-type]
        else:
            rows.append((f"`{prefix}{name}`", _default(field), _meaning(prefix + name, field)))
    return rows


def _table(rows: list[Row]) -> str:
    cells = ("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows)
    return "\n".join((HEADER, *cells))


def _platform_rows() -> list[Row]:
    meaning = _meaning("platform_apps", Settings.model_fields["platform_apps"])
    rows: list[Row] = []
    for platform, transports in PLATFORM_TRANSPORTS.items():
        derived = ", else ".join([f"`{DEFAULT_APP}`", *(f"the one `{transport}` app" for transport in transports)])
        rows.append((f"`platform_apps.{platform}`", derived, meaning))
    return rows


def _app_tables() -> dict[str, str]:
    """The keys every app has, then one table per transport with the keys only it has (its credentials)."""
    common = frozenset(AppConfig.model_fields)
    found = {"apps": _table(_rows(AppConfig, ""))}
    for transport, config in APP_CONFIGS.items():
        rows = _rows(config, "", skip=common)
        if rows:
            found[f"apps.{transport}"] = _table(rows)
    return found


def tables() -> dict[str, str]:
    """Every generated table by marker name, in the order of the settings model.

    A section is one table; a section made only of sections (`dialects`, `transports`) is one table per
    subsection, since the README describes each in its own place.
    """
    found: dict[str, str] = {}
    for name, field in Settings.model_fields.items():
        section = field.annotation
        if name == "apps":
            found.update(_app_tables())
        elif name == "platform_apps":
            found[name] = _table(_platform_rows())
        elif isinstance(section, type) and issubclass(section, BaseModel):
            parts = section.model_fields
            if all(_is_section(part) for part in parts.values()):
                for part_name, part in parts.items():
                    found[f"{name}.{part_name}"] = _table(_rows(part.annotation, f"{name}.{part_name}."))  # type: ignore[arg-type]
            else:
                found[name] = _table(_rows(section, f"{name}."))
        else:
            raise TypeError(f"Settings.{name}: no reference rendering for this kind of field")
    return found


def marked_blocks(text: str) -> dict[str, str]:
    """The tables between config markers in `text`, by marker name."""
    return {match["name"]: match["body"] for match in _MARKER.finditer(text)}


def update(text: str) -> str:
    """`text` with every marked table replaced by the generated one; a table without markers is an error."""
    generated = tables()
    missing = sorted(set(generated) - set(marked_blocks(text)))
    if missing:
        raise ValueError("no markers for: " + ", ".join(f"<!-- config:{name}:start -->" for name in missing))

    def replace(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in generated:
            raise ValueError(f"<!-- config:{name}:start --> names no generated table")
        return f"<!-- config:{name}:start -->\n{generated[name]}\n<!-- config:{name}:end -->"

    return _MARKER.sub(replace, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pushstr.config_reference", description="Render the configuration tables of README.md."
    )
    parser.add_argument("--write", action="store_true", help="rewrite the marked tables of the README in place")
    parser.add_argument("--readme", type=Path, default=Path("README.md"), help="default: ./README.md")
    args = parser.parse_args(argv)
    if not args.write:
        for name, table in tables().items():
            print(f"<!-- config:{name}:start -->\n{table}\n<!-- config:{name}:end -->\n")
        return 0
    readme: Path = args.readme
    text = readme.read_text(encoding="utf-8")
    try:
        updated = update(text)
    except ValueError as exc:
        print(f"{readme}: {exc}", file=sys.stderr)
        return 1
    if updated != text:
        readme.write_text(updated, encoding="utf-8")
    print(f"{readme}: {'updated' if updated != text else 'up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
