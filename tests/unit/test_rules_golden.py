"""The rule path gives the same transitions (every field) and writes the same state
(byte for byte: the Faust table's JSON) as the code before the rule-path speed-up of
issue 13. ``data/rules_golden.json`` was written by that code
(``python tests/unit/rules_golden.py tests/unit/data/rules_golden.json`` at 85c2197),
including a state store it wrote half-way through a run: this code reads it and goes on
as that code did (a worker upgraded in the middle of a stream)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import rules_golden

GOLDEN: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "rules_golden.json").read_text())


@pytest.mark.parametrize("case", sorted(rules_golden.CASES))
def test_same_transitions_and_state_as_before(case: str) -> None:
    mix, restart = rules_golden.CASES[case]
    assert rules_golden.digest(rules_golden.run(mix, restart)) == GOLDEN[case]


def test_reads_state_written_by_the_code_before() -> None:
    store = {k: (v[0], v[1]) for k, v in GOLDEN["_store_excursions_shuffled_80"].items()}
    got = rules_golden.run("excursions-shuffled", seed_store=store, start=80)
    assert rules_golden.digest(got) == GOLDEN["_after_store"]
    assert got["transitions"]  # alerts fire and resolve after the upgrade
