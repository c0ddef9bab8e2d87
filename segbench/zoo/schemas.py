"""The JSON Schemas segbench publishes (``schemas/*.schema.json``), generated from the declared types: results.json,
a zoo card and a suite file. ``python -m segbench.zoo.schemas`` writes them (this module sits downstream of every type
it publishes); a test keeps them current."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter


def published() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema, for every format segbench reads."""
    from segbench.config.schema import SUITE
    from segbench.results.schema import Results
    from segbench.zoo.cards import Card

    schemas = {
        "results.schema.json": Results.model_json_schema(by_alias=True),
        "card.schema.json": TypeAdapter(Card).json_schema(),
        "suite.schema.json": SUITE.json_schema(),
    }
    titles = {"results.schema.json": "segbench results.json (schema version 2)",
              "card.schema.json": "segbench model card (zoo/*.yaml, schema version 2)",
              "suite.schema.json": "segbench suite (suites/*.yaml)"}
    return {name: {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": titles[name], **schema}
            for name, schema in schemas.items()}


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write(folder: Path) -> list[Path]:
    """Write every published schema into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, schema in published().items():
        (folder / name).write_text(render(schema))
        paths.append(folder / name)
    return paths


if __name__ == "__main__":
    for path in write(Path(sys.argv[1] if len(sys.argv) > 1 else "schemas")):
            print(path)
