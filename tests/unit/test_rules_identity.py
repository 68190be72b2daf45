"""Fingerprints and transition ids: pinned to the values the rules made before they were
gathered in ``stream.rules.identity`` (alerts in existing databases are keyed by them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from ganzhi.contracts import Severity, TransitionKind, Violation
from stream.rules import cold_chain, device_health, elevator, identity, ordering, vision
from stream.rules.excursion import to_us

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
T1 = datetime(2026, 3, 1, 8, 0, 0, 123456, tzinfo=UTC)

# Computed with the code before the identity module existed.
PINNED_FINGERPRINTS = [
    ("cold_chain.temperature_high", "site-a", "cr-1", "a81c4db118fd3dfebab7ea9ecf6c857b"),
    ("cold_chain.door_open", "site-b", "fz-1", "65157dc175ff537a1a2bd62d0a725221"),
    ("cold_chain.door_open", "site-a", "cr-1", "1ba24fa2ccc63dd26ede16a079cd3537"),
    ("elevator.overspeed", "site-a", "el-1", "916df25b6735aa5a6e61add6a49cbff7"),
    ("vision.smoking", "site-k", "cam-1", "26f22e856fec3cc37827e4059a5bde2b"),
    ("device.offline", "site-a", "cold-room-01", "9f3be563043af11ec0fbebc087fd0df2"),
]


@pytest.mark.parametrize(("rule_id", "site", "device", "want"), PINNED_FINGERPRINTS)
def test_fingerprints_are_the_ones_made_before(rule_id: str, site: str, device: str,
                                               want: str) -> None:
    assert identity.fingerprint(rule_id, site, device) == want


def test_the_rule_modules_make_the_pinned_fingerprints() -> None:
    assert cold_chain.fingerprint("cold_chain.door_open", "site-b", "fz-1") == \
        "65157dc175ff537a1a2bd62d0a725221"
    assert elevator.fingerprint("elevator.overspeed", "site-a", "el-1") == \
        "916df25b6735aa5a6e61add6a49cbff7"
    assert vision.fingerprint("vision.smoking", "site-k", "cam-1") == \
        "26f22e856fec3cc37827e4059a5bde2b"
    assert device_health.fingerprint("site-a", "cold-room-01") == \
        "9f3be563043af11ec0fbebc087fd0df2"


def test_transition_ids_are_the_ones_made_before() -> None:
    fp = "1ba24fa2ccc63dd26ede16a079cd3537"
    assert identity.transition_id(fp, TransitionKind.FIRING, T0) == \
        "27b2a39ce2674afe025d55a0d92d6be5"
    assert identity.transition_id(fp, TransitionKind.RESOLVED, T1) == \
        "55ca37736627299fe700969baa838453"
    assert identity.transition_id(fp, TransitionKind.RESOLVED, T0) == \
        "da2f578200c980c625283fc3ed27837d"
    offline = "9f3be563043af11ec0fbebc087fd0df2"
    assert identity.transition_id(offline, TransitionKind.FIRING, T1) == \
        "93bebaa379c60b6631d9c5fbe25f7bf5"


def test_the_start_is_taken_in_utc_and_must_be_aware() -> None:
    fp = "1ba24fa2ccc63dd26ede16a079cd3537"
    east8 = T0.astimezone(timezone(timedelta(hours=8)))
    assert identity.transition_id(fp, TransitionKind.FIRING, east8) == \
        "27b2a39ce2674afe025d55a0d92d6be5"
    with pytest.raises(ValueError):
        identity.transition_id(fp, TransitionKind.FIRING, T0.replace(tzinfo=None))


def test_generations_make_new_ids_and_zero_is_the_plain_one() -> None:
    fp = "1ba24fa2ccc63dd26ede16a079cd3537"
    ids = {identity.transition_id(fp, k, T0, g)
           for k in TransitionKind for g in range(3)}
    assert len(ids) == 6
    assert identity.transition_id(fp, TransitionKind.FIRING, T0, 0) == \
        identity.transition_id(fp, TransitionKind.FIRING, T0)
    with pytest.raises(ValueError):
        identity.transition_id(fp, TransitionKind.FIRING, T0, -1)


def test_extra_parts_split_the_fingerprint() -> None:
    base = identity.fingerprint("device.source_error", "site-a", "cr-1")
    assert identity.fingerprint("device.source_error", "site-a", "cr-1", "modbus_timeout") \
        != base


def test_rules_end_to_end_make_the_pinned_ids() -> None:
    """A door episode through the ordering wrapper and a camera finding: the ids are those
    the code made before."""
    from stream.engine import COLD_STORE_RULES

    params = cold_chain.default_params("chilled")
    st = COLD_STORE_RULES.ordered_type()
    out = []
    for s in range(0, 900, 20):
        snap = (T0 + timedelta(seconds=s), {"door_open": 1.0 if 100 <= s < 600 else 0.0})
        r = ordering.feed(st, COLD_STORE_RULES, params, "site-a", "cr-1", [snap], 120)
        st = r.state
        out.extend(r.transitions)
    assert [(t.kind, t.fingerprint, t.transition_id) for t in out] == [
        (TransitionKind.FIRING, "1ba24fa2ccc63dd26ede16a079cd3537",
         "b2784094e3e1867017c9ffb28758c548"),
        (TransitionKind.RESOLVED, "1ba24fa2ccc63dd26ede16a079cd3537",
         "4966c3e1b7fe7678f680daa8e4352c20"),
    ]
    vs, a = vision.step(vision.VisionState(), "site-k", "cam-1", vision.Finding(
        Violation.SMOKING, "raised", T0, 0.9, [], None))
    _, b = vision.step(vs, "site-k", "cam-1", vision.Finding(
        Violation.SMOKING, "cleared", T0 + timedelta(seconds=60), 0.9, [], None))
    assert (a[0].transition_id, b[0].transition_id) == (
        "a757521682f46ae8ecddf29535ebe3a7", "f616d16343b02c17146dd6764e0cb791")


def test_a_retraction_is_the_resolved_of_its_episode() -> None:
    fire = cold_chain._make(TransitionKind.FIRING, "cold_chain.door_open", Severity.MAJOR,
                            "site-a", "cr-1", to_us(T0), to_us(T0) + 1, "x", {})
    assert fire.transition_id == "27b2a39ce2674afe025d55a0d92d6be5"
    assert ordering.retraction(fire, to_us(T0) + 5).transition_id == \
        "da2f578200c980c625283fc3ed27837d"
