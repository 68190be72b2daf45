"""Filters shared by the alert and incident lists (the console's needs): severity, rule,
site, jurisdiction subtree and a time window, each a SQL condition with parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Query

from api.errors import unprocessable
from api.params import IsoDateTime
from ganzhi.access import subtree_prefix
from ganzhi.contracts import Severity

RULE_PATTERN = r"^[a-z][a-z0-9_.]{0,127}\*?$"
NODE_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


@dataclass(frozen=True)
class ListFilters:
    severity: list[Severity] | None
    rule_id: str | None  # exact, or a prefix ending in '*' (e.g. cold_chain.*)
    jurisdiction: str | None  # a node: its whole subtree
    since: IsoDateTime | None
    until: IsoDateTime | None

    def sql(self, *, severity: str, rule: str, site: str, time: str
            ) -> tuple[list[str], list[Any]]:
        """Conditions on the given columns and their parameters."""
        where: list[str] = []
        params: list[Any] = []
        if self.severity:
            where.append(f"{severity} = ANY(%s)")
            params.append([s.value for s in self.severity])
        if self.rule_id is not None:
            if self.rule_id.endswith("*"):
                where.append(f"{rule} LIKE %s")
                params.append(subtree_prefix(self.rule_id[:-1]))
            else:
                where.append(f"{rule} = %s")
                params.append(self.rule_id)
        if self.jurisdiction is not None:
            where.append(
                f"{site} IN (SELECT s.id FROM sites s JOIN jurisdictions j"
                " ON j.id = s.jurisdiction_id WHERE starts_with(j.path, (SELECT p.path"
                " FROM jurisdictions p WHERE p.id = %s)))")
            params.append(self.jurisdiction)
        if self.since is not None:
            where.append(f"{time} >= %s")
            params.append(self.since)
        if self.until is not None:
            where.append(f"{time} < %s")
            params.append(self.until)
        return where, params


def list_filters(
    severity: Annotated[list[Severity] | None, Query(
        description="One or more severities (repeat the parameter).")] = None,
    rule_id: Annotated[str | None, Query(
        pattern=RULE_PATTERN, description="A rule id, or a prefix ending in * "
        "(cold_chain.*).")] = None,
    jurisdiction: Annotated[str | None, Query(
        pattern=NODE_PATTERN, description="A jurisdiction node: sites of its subtree (the "
        "caller's scope still applies).")] = None,
    since: Annotated[IsoDateTime | None, Query(
        description="Started (alerts) or opened (incidents) at or after.")] = None,
    until: Annotated[IsoDateTime | None, Query(description="… and before.")] = None,
) -> ListFilters:
    if since is not None and until is not None and since >= until:
        raise unprocessable("since must be before until", ("query", "since"))
    return ListFilters(severity, rule_id, jurisdiction, since, until)


FiltersDep = Annotated[ListFilters, Depends(list_filters)]
