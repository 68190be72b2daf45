"""Receivers of clues and which incidents each one takes. Pure.

The task system's webhook (``GANZHI_WEBHOOK__URL``) is the receiver ``task-system``;
``GANZHI_ALERTS__RECEIVERS`` (JSON) adds more, each with its own URL, signing key,
filters and outbox rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from alerts.policy import matches_any, rank
from alerts.signing import SigningKey
from ganzhi.contracts import Severity
from ganzhi.settings import (
    WEBHOOK_SECRET_MIN,
    InsecureSettingError,
    Settings,
    require_secret,
    webhook_secret,
)

DEFAULT_RECEIVER = "task-system"


@dataclass(frozen=True)
class Receiver:
    name: str
    url: str | None  # None: clues wait in its outbox until a URL is configured
    keys: tuple[SigningKey, ...]  # the current key first, then one being retired
    sites: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()
    min_severity: Severity = Severity.MINOR
    escalation_only: bool = False
    send_resolved: bool = True

    def takes(self, site_id: str, rule_id: str, severity: Severity) -> bool:
        """Whether a routine (not escalated) incident goes to this receiver."""
        if self.escalation_only:
            return False
        if self.sites and not matches_any(site_id, self.sites):
            return False
        if self.rules and not matches_any(rule_id, self.rules):
            return False
        return rank(severity) >= rank(self.min_severity)


def receivers_from(settings: Settings) -> list[Receiver]:
    """Every configured receiver; refuses weak secrets and duplicate names."""
    w = settings.webhook
    keys = [SigningKey(w.key_id, webhook_secret(w))]
    if w.previous_secret is not None:
        keys.append(SigningKey(w.previous_key_id or "previous", require_secret(
            "GANZHI_WEBHOOK__PREVIOUS_SECRET", w.previous_secret, WEBHOOK_SECRET_MIN).encode()))
    out = [Receiver(DEFAULT_RECEIVER, w.url, tuple(keys))]
    for i, r in enumerate(settings.alerts.receivers):
        var = f"GANZHI_ALERTS__RECEIVERS[{i}].secret"
        rkeys = [SigningKey(r.key_id, require_secret(var, r.secret, WEBHOOK_SECRET_MIN).encode())]
        if r.previous_secret is not None:
            rkeys.append(SigningKey(r.previous_key_id or "previous", require_secret(
                f"GANZHI_ALERTS__RECEIVERS[{i}].previous_secret", r.previous_secret,
                WEBHOOK_SECRET_MIN).encode()))
        out.append(Receiver(r.name, r.url, tuple(rkeys), tuple(r.sites), tuple(r.rules),
                            Severity(r.min_severity), r.escalation_only, r.send_resolved))
    names = [r.name for r in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise InsecureSettingError(f"receiver names must be unique: {sorted(dup)}")
    return out


def routes(receivers: Sequence[Receiver], site_id: str, rule_id: str,
           severity: Severity) -> list[str]:
    """Names of the receivers a new clue goes to."""
    return [r.name for r in receivers if r.takes(site_id, rule_id, severity)]
