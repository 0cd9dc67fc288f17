"""Signed tokens for links in mail: unsubscribe, manage, confirm a subscription.

A token carries the subscriber id, the purpose and the subscriber's ``token_version``; it is
signed with ``TRIALWATCH_SECRET_KEY`` (itsdangerous, HMAC-SHA256 with a per-purpose salt), so a
token for one purpose is refused for another and an altered one is refused outright.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from .errors import TokenError

PURPOSES = ("unsubscribe", "manage", "confirm", "add")
# How long a link stays good. Unsubscribe links in old mail must keep working (RFC 8058 says a
# recipient can act on any message), so they do not expire; manage and confirm links do.
MAX_AGE_S = {"unsubscribe": None, "manage": 30 * 86400, "confirm": 2 * 86400, "add": 2 * 86400}


@dataclass(frozen=True)
class TokenData:
    subscriber_id: int
    purpose: str
    version: int
    # An "add" link (an active subscriber asked for more): what it adds once confirmed.
    trials: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()


@functools.lru_cache(maxsize=16)
def _serializer(secret_key: str, purpose: str):  # noqa: ANN202
    # Cached: a send signs two tokens per digest, the same key and purposes every time.
    from itsdangerous import URLSafeTimedSerializer

    if purpose not in PURPOSES:
        raise ValueError(f"unknown token purpose {purpose!r}")
    return URLSafeTimedSerializer(secret_key, salt=f"trialwatch.{purpose}")


def make(secret_key: str, purpose: str, subscriber_id: int, version: int = 0) -> str:
    return _serializer(secret_key, purpose).dumps([subscriber_id, version])


def make_add(secret_key: str, subscriber_id: int, version: int, trials: list[str], searches: list[str]) -> str:
    """The confirmation link of an active subscriber's request to follow more: the additions
    ride in the signed token, so nothing changes until she opens it and confirms."""
    return _serializer(secret_key, "add").dumps([subscriber_id, version, list(trials), list(searches)])


def read(secret_key: str, purpose: str, token: str, *, max_age_s: int | None = -1) -> TokenData:
    """Verify ``token`` for ``purpose``; raises TokenError if forged, altered or expired."""
    from itsdangerous import BadSignature, SignatureExpired

    age = MAX_AGE_S[purpose] if max_age_s == -1 else max_age_s
    try:
        payload = _serializer(secret_key, purpose).loads(token.strip(), max_age=age)
    except SignatureExpired:
        raise TokenError(f"this {purpose} link has expired") from None
    except BadSignature:
        raise TokenError(f"this {purpose} link is not valid (it was altered, or signed with another key)") from None
    try:
        if purpose == "add":
            sid, version, trials, searches = payload
            return TokenData(int(sid), purpose, int(version), tuple(str(t) for t in trials),
                             tuple(str(x) for x in searches))
        sid, version = payload
        return TokenData(int(sid), purpose, int(version))
    except (TypeError, ValueError):
        raise TokenError(f"this {purpose} link is not valid") from None
