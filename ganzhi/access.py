"""Who may see and do what: roles, permissions, and the scope every query is filtered by.

A staff account is bound to a node of the jurisdiction tree and sees only the sites
registered under that node's subtree; an account at a root node sees every site,
registered or not. An API key may be narrowed further to a list of sites. Every query
of every route filters its rows with :meth:`Scope.site_filter` in SQL: the scope is
enforced by the database query, not by the UI. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Role(StrEnum):
    VIEWER = "viewer"  # reads alerts, incidents, readings, evidence, registry, figures
    STAFF = "staff"  # + works incidents: acknowledge, assign, comment, resolve
    SUPERVISOR = "supervisor"  # + silences, registry edits, audit log
    ADMINISTRATOR = "administrator"  # + accounts, API keys, provisioning, receivers


class Permission(StrEnum):
    READ = "read"
    WORK_INCIDENTS = "work_incidents"
    SILENCE = "silence"
    EDIT_REGISTRY = "edit_registry"
    READ_AUDIT = "read_audit"
    MANAGE_ACCOUNTS = "manage_accounts"
    MANAGE_KEYS = "manage_keys"
    PROVISION = "provision"
    OPERATE_RECEIVERS = "operate_receivers"
    FEEDBACK = "feedback"  # API keys of the task system only


_BY_ROLE: dict[Role, frozenset[Permission]] = {}
_BY_ROLE[Role.VIEWER] = frozenset({Permission.READ})
_BY_ROLE[Role.STAFF] = _BY_ROLE[Role.VIEWER] | {Permission.WORK_INCIDENTS}
_BY_ROLE[Role.SUPERVISOR] = _BY_ROLE[Role.STAFF] | {
    Permission.SILENCE, Permission.EDIT_REGISTRY, Permission.READ_AUDIT}
_BY_ROLE[Role.ADMINISTRATOR] = _BY_ROLE[Role.SUPERVISOR] | {
    Permission.MANAGE_ACCOUNTS, Permission.MANAGE_KEYS, Permission.PROVISION,
    Permission.OPERATE_RECEIVERS}


def permissions_of(role: Role) -> frozenset[Permission]:
    return _BY_ROLE[role]


# API key scopes -> what they allow (a key never manages accounts or keys).
KEY_SCOPES: dict[str, frozenset[Permission]] = {
    "feedback": frozenset({Permission.FEEDBACK}),
    "export": frozenset({Permission.READ}),  # read-only export
    "provisioning": frozenset({Permission.READ, Permission.PROVISION}),
    "staff": frozenset({Permission.READ, Permission.WORK_INCIDENTS}),
    "silences": frozenset({Permission.READ, Permission.SILENCE}),
    "operator": frozenset({Permission.READ, Permission.OPERATE_RECEIVERS}),
}


def key_permissions(scopes: Iterable[str]) -> frozenset[Permission]:
    out: frozenset[Permission] = frozenset()
    for scope in scopes:
        out |= KEY_SCOPES.get(scope, frozenset())
    return out


def subtree_prefix(path: str) -> str:
    """``/gd/sz/`` -> the LIKE pattern of its subtree (itself included)."""
    escaped = path.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


_SITES_UNDER = (
    "SELECT s.id FROM sites s JOIN jurisdictions j ON j.id = s.jurisdiction_id"
    " WHERE j.path LIKE %s")


@dataclass(frozen=True)
class Scope:
    """The sites a caller may see. ``path`` None: every site, registered or not (an
    account at a root node, or the platform itself); else the sites registered under
    that jurisdiction path. ``site_ids`` narrows it further (an API key for a few sites)."""

    path: str | None = None
    site_ids: frozenset[str] | None = None

    @property
    def everything(self) -> bool:
        return self.path is None and self.site_ids is None

    def site_filter(self, column: str) -> tuple[str, list[Any]]:
        """A SQL condition on ``column`` (a site id column) and its parameters."""
        clauses: list[str] = []
        params: list[Any] = []
        if self.path is not None:
            clauses.append(f"{column} IN ({_SITES_UNDER})")
            params.append(subtree_prefix(self.path))
        if self.site_ids is not None:
            clauses.append(f"{column} = ANY(%s)")
            params.append(sorted(self.site_ids))
        return (" AND ".join(clauses) if clauses else "TRUE"), params

    def allows(self, site_id: str, site_path: str | None) -> bool:
        """Whether a site is in scope, decided in Python: the same rule as
        :meth:`site_filter` for a site already loaded with its jurisdiction path
        (``site_path`` None: the site is not registered). For fanning out one row to many
        callers (the live stream); every query still filters in SQL."""
        if self.path is not None and (site_path is None
                                      or not site_path.startswith(self.path)):
            return False
        return self.site_ids is None or site_id in self.site_ids

    def path_filter(self, column: str) -> tuple[str, list[Any]]:
        """A SQL condition on ``column`` (a jurisdiction path column): the subtree."""
        if self.path is None:
            return "TRUE", []
        return f"{column} LIKE %s", [subtree_prefix(self.path)]


EVERYTHING = Scope()
