"""API keys bound to spaces (`API_KEYS`), checked on every request but the probes and the console's files.

`API_KEYS` is a comma-separated list of `key=space1|space2` entries; `*` as the spaces grants them all
(and the endpoints that are not about one space). Unset, the API is open (the backend warns at start).
Keys are compared in constant time, against every entry (no early exit), and never logged or echoed.
The key is checked once per request, before its body is read (backend.api.request_guard), and the grant
left in the ASGI scope for the routes, which check the space.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from backend.errors import Forbidden, Unauthorized
from backend.settings import ALL_SPACES, api_key_entries

# Where the request guard leaves the caller's Grant in the ASGI scope; None there: an anonymous caller of an
# open path (a probe, the console's files).
GRANT_SCOPE_KEY = "backend.grant"


@dataclass(frozen=True)
class Grant:
    """What the caller may touch: `spaces` None means every space."""

    spaces: frozenset[str] | None

    @property
    def restricted(self) -> bool:
        """True for a key bound to some spaces; False for a '*' key or an open API (an operator)."""
        return self.spaces is not None

    def covers(self, space_id: str) -> bool:
        """Whether the key may touch this space."""
        return self.spaces is None or space_id in self.spaces

    def require(self, space_id: str) -> None:
        """Forbidden unless the key covers this space."""
        if not self.covers(space_id):
            raise Forbidden(f"this API key does not cover space {space_id!r}")

    def require_all(self) -> None:
        """Forbidden unless the key covers every space (`*`)."""
        if self.spaces is not None:
            raise Forbidden("this endpoint needs an API key for all spaces ('*')")


OPEN = Grant(None)


@dataclass(frozen=True)
class ApiKeys:
    """The parsed `API_KEYS`; `entries` is empty when auth is off."""

    entries: tuple[tuple[bytes, frozenset[str] | None], ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.entries)

    @classmethod
    def parse(cls, spec: str) -> "ApiKeys":
        """Parse `key=space1|space2,key2=*`; ValueError (without the keys in it) when malformed."""
        return cls(tuple(
            (key.encode(), None if ALL_SPACES in spaces else spaces) for key, spaces in api_key_entries(spec)
        ))

    def authenticate(self, authorization: str | None) -> Grant:
        """The grant of the request's `Authorization: Bearer <key>`; Unauthorized when missing or unknown."""
        if not self.enabled:
            return OPEN
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        presented = token.strip().encode()
        found: Grant | None = None
        for key, spaces in self.entries:  # every entry is compared: the time does not say which one matched
            if hmac.compare_digest(presented, key):
                found = Grant(spaces)
        if found is None:
            raise Unauthorized("unknown API key")
        return found


def is_operator(grant: Grant | None) -> bool:
    """Whether the caller may see operator diagnostics (internal, redacted URLs): a '*' key, or API_KEYS unset."""
    return grant is not None and not grant.restricted
