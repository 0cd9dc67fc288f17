"""Link tokens: ``tokens.make`` writes what itsdangerous writes (it signs without the library's
layers, for speed), so ``tokens.read`` (the library) takes every token and old links keep working."""

from __future__ import annotations

from unittest import mock

import pytest
from itsdangerous import URLSafeTimedSerializer

from trialwatch import tokens
from trialwatch.errors import TokenError

SECRET = "s3cret-key-for-tests-only-0123456789"


@pytest.mark.parametrize("purpose", ["unsubscribe", "manage", "confirm"])
@pytest.mark.parametrize("subscriber_id, version", [
    (0, 0), (1, 0), (12345, 3), (2**40, 7),
    (int("1" * 60), 0),   # a payload that compresses: the library's "." form
])
def test_make_is_byte_for_byte_what_itsdangerous_signs(purpose, subscriber_id, version):
    with mock.patch("time.time", return_value=1_764_455_000.7):
        library = URLSafeTimedSerializer(SECRET, salt=f"trialwatch.{purpose}").dumps([subscriber_id, version])
        assert tokens.make(SECRET, purpose, subscriber_id, version) == library
    assert tokens.read(SECRET, purpose, library, max_age_s=None) == tokens.TokenData(subscriber_id, purpose, version)


def test_a_token_signed_for_one_purpose_or_key_is_refused_for_another():
    token = tokens.make(SECRET, "unsubscribe", 7, 1)
    assert tokens.read(SECRET, "unsubscribe", token).subscriber_id == 7
    with pytest.raises(TokenError):
        tokens.read(SECRET, "manage", token)
    with pytest.raises(TokenError):
        tokens.read(SECRET + "x", "unsubscribe", token)
    with pytest.raises(ValueError):
        tokens.make(SECRET, "nonsense", 7)
