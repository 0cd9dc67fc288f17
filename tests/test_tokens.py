"""Link tokens (itsdangerous): bound to their purpose and to the secret key."""

from __future__ import annotations


import pytest

from trialwatch import tokens
from trialwatch.errors import TokenError

SECRET = "s3cret-key-for-tests-only-0123456789"


def test_a_token_signed_for_one_purpose_or_key_is_refused_for_another():
    token = tokens.make(SECRET, "unsubscribe", 7, 1)
    assert tokens.read(SECRET, "unsubscribe", token).subscriber_id == 7
    with pytest.raises(TokenError):
        tokens.read(SECRET, "manage", token)
    with pytest.raises(TokenError):
        tokens.read(SECRET + "x", "unsubscribe", token)
    with pytest.raises(ValueError):
        tokens.make(SECRET, "nonsense", 7)
