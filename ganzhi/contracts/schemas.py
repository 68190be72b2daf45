"""Write the payload models as JSON Schema files (``python -m ganzhi.contracts.schemas``).

The files are committed so third parties can build devices and consumers without
Python; a unit test fails when they drift from the models.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ganzhi.contracts import payloads

SCHEMA_DIR = Path(__file__).parent / "schemas"

PUBLISHED: dict[str, type[BaseModel]] = {
    "telemetry": payloads.Telemetry,
    "event": payloads.DeviceEvent,
    "detection": payloads.Detection,
    "evidence": payloads.Evidence,
    "evidence-ref": payloads.EvidenceRef,
    "status": payloads.DeviceStatus,
    "dead-letter": payloads.DeadLetter,
    "alert-transition": payloads.AlertTransition,
    "clue": payloads.Clue,
}


def render() -> dict[str, str]:
    out: dict[str, str] = {}
    for name, model in PUBLISHED.items():
        schema: dict[str, Any] = model.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://ganzhi.invalid/schemas/v{payloads.SCHEMA_VERSION}/{name}.json"
        out[f"{name}.v{payloads.SCHEMA_VERSION}.json"] = (
            json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
        )
    return out


def main() -> int:
    SCHEMA_DIR.mkdir(exist_ok=True)
    for filename, text in render().items():
        (SCHEMA_DIR / filename).write_text(text, encoding="utf-8")
        print(SCHEMA_DIR / filename)
    return 0


if __name__ == "__main__":
    sys.exit(main())
