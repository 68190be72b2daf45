"""The registry: the jurisdiction tree, the sites under it and their devices.

``models`` validates (pure), ``tabular`` reads CSV and XLSX files (pure), ``store``
creates, reads, changes and deletes within a caller's :class:`~ganzhi.access.Scope`
(filtered in SQL, every change audited in its own transaction) and ``bulk`` imports a
whole file of sites or devices at once, all or nothing. See docs/access.md.
"""

from __future__ import annotations


class RegistryError(Exception):
    """A refused registry action; the message says why and is safe to show."""


class NotFound(RegistryError, LookupError):
    """No such node, site or device, or one outside the caller's scope (alike)."""


class Conflict(RegistryError, ValueError):
    """The registry's state does not allow it (an id taken, a node not empty...)."""


class Forbidden(RegistryError, PermissionError):
    """Within the caller's scope, but not theirs to do (a root node, their own node)."""


class Invalid(RegistryError, ValueError):
    """Bad input."""
