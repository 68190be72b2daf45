"""The rule path gives the same transitions (every field) as the code before the
rule-path speed-up of issue 13, and writes the same state as the record format (byte for
byte: the JSON a checkpoint stores).

* ``data/rules_golden.json`` was written by the code before the speed-up
  (``python tests/unit/rules_golden.py tests/unit/data/rules_golden.json`` at 85c2197):
  its transition digests, and a state store it wrote half-way through a run (pydantic
  models, every field, the head included), which this code reads and goes on from as
  that code did (a worker upgraded in the middle of a stream).
* ``data/rules_golden_records.json`` was written the same way when rule state became
  msgspec records (fields at their default left out, no head): its state digests, and
  its half-way store.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import rules_golden

DATA = Path(__file__).parent / "data"
BEFORE: dict[str, Any] = json.loads((DATA / "rules_golden.json").read_text())
RECORDS: dict[str, Any] = json.loads((DATA / "rules_golden_records.json").read_text())
TRANSITIONS = ("transitions", "transitions_sha256")
STATES = ("states", "states_sha256")


def _part(digest: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: digest[k] for k in keys}


@pytest.mark.parametrize("case", sorted(rules_golden.CASES))
def test_same_transitions_as_before_and_same_state_as_the_records(case: str) -> None:
    mix, restart = rules_golden.CASES[case]
    got = rules_golden.digest(rules_golden.run(mix, restart))
    assert _part(got, TRANSITIONS) == _part(BEFORE[case], TRANSITIONS)
    assert _part(got, STATES) == _part(RECORDS[case], STATES)


@pytest.mark.parametrize("fixture", [BEFORE, RECORDS], ids=["pydantic", "records"])
def test_reads_state_written_half_way_and_goes_on_as_before(fixture: dict[str, Any]) -> None:
    store = {k: (v[0], v[1]) for k, v in fixture["_store_excursions_shuffled_80"].items()}
    got = rules_golden.run("excursions-shuffled", seed_store=store, start=80)
    digest = rules_golden.digest(got)
    assert _part(digest, TRANSITIONS) == _part(BEFORE["_after_store"], TRANSITIONS)
    if fixture is RECORDS:  # (keys not fed again keep the JSON they were read from)
        assert _part(digest, STATES) == _part(RECORDS["_after_store"], STATES)
    assert got["transitions"]  # alerts fire and resolve after the upgrade
