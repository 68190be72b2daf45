"""``device.incomplete_config``: a device heard whose class needs parameters nobody set (pure).

A cold room without a variant, an elevator without its rated speed or top landing is not
judged on a guessed default (stream/rules/model.py leaves those rules off). So that this is
not silent, the device gets an INFO alert, raised the first time it is heard incomplete
(``started_at``: that message's event time) and resolved when its parameters are complete
(on its next message, or by the worker's timer). ``values.missing`` lists the parameters
(names of :mod:`ganzhi.device_params`). INFO alerts never become clues; they show in the
API and the console.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec

from ganzhi.contracts import AlertTransition, DeviceClass, Severity, TransitionKind
from stream.rules.excursion import from_us, to_us
from stream.rules.identity import fingerprint, transition_id
from stream.rules.record import Record, evolve

RULE_INCOMPLETE_CONFIG = "device.incomplete_config"


class ConfigState(Record, frozen=True):
    """Per device; JSON round-trippable (a Faust table value)."""

    device_class: DeviceClass
    missing: list[str] = msgspec.field(default_factory=list)
    open_since: int | None = None  # started_at (µs) of the FIRING sent, not resolved


def _transition(kind: TransitionKind, st: ConfigState, site_id: str, device_id: str,
                started_at: int, at: int, missing: Sequence[str]) -> AlertTransition:
    fp = fingerprint(RULE_INCOMPLETE_CONFIG, site_id, device_id)
    start = from_us(started_at)
    if kind is TransitionKind.FIRING:
        summary = (f"{st.device_class.value} not fully configured: missing "
                   f"{', '.join(missing)}; the rules that need them are not run")
    else:
        summary = f"{st.device_class.value} configuration complete"
    return AlertTransition(
        transition_id=transition_id(fp, kind, start), kind=kind, fingerprint=fp,
        rule_id=RULE_INCOMPLETE_CONFIG, severity=Severity.INFO, site_id=site_id,
        device_id=device_id, started_at=start, at=from_us(max(at, started_at)),
        summary=summary,
        values={"missing": list(missing), "device_class": st.device_class.value})


def observe(state: ConfigState | None, device_class: DeviceClass, site_id: str,
            device_id: str, missing: Sequence[str], ts: datetime
            ) -> tuple[ConfigState | None, list[AlertTransition]]:
    """The device was heard at ``ts`` (event time) and lacks ``missing``. Returns the new
    state (``None``: nothing to keep, the device is complete and no alert is open) and
    the transitions."""
    t = to_us(ts)
    if missing:
        if state is not None and state.open_since is not None:
            if list(missing) == state.missing and state.device_class is device_class:
                return state, []
            # Still incomplete, another set missing: remembered; the alert stays open.
            return evolve(state, missing=list(missing), device_class=device_class), []
        new = ConfigState(device_class=device_class, missing=list(missing), open_since=t)
        return new, [_transition(TransitionKind.FIRING, new, site_id, device_id, t, t,
                                 missing)]
    if state is None or state.open_since is None:
        return None, []
    return None, [_transition(TransitionKind.RESOLVED, state, site_id, device_id,
                              state.open_since, t, [])]


def complete(state: ConfigState, site_id: str, device_id: str, now: datetime
             ) -> list[AlertTransition]:
    """The RESOLVED of an open alert whose device is now complete (the timer's path: no
    message from the device needed)."""
    if state.open_since is None:
        return []
    return [_transition(TransitionKind.RESOLVED, state, site_id, device_id,
                        state.open_since, to_us(now), [])]
