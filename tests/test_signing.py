"""HMAC signatures of intake requests: what verifies and what does not."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from riposte.deployments.signing import sign, verify

KEY = b"k-1"
OTHER = b"k-2"
BODY = b'{"id": "a"}'


def test_signature_by_a_current_key_verifies() -> None:
    assert verify(sign(BODY, [KEY]), BODY, [OTHER, KEY])


def test_header_signed_with_old_and_new_key_verifies_against_either() -> None:
    header = sign(BODY, [KEY, OTHER])
    assert verify(header, BODY, [KEY]) and verify(header, BODY, [OTHER])


def test_changed_body_does_not_verify() -> None:
    assert not verify(sign(BODY, [KEY]), BODY + b" ", [KEY])


def test_unknown_key_does_not_verify() -> None:
    assert not verify(sign(BODY, [OTHER]), BODY, [KEY])


def test_signature_outside_five_minutes_does_not_verify() -> None:
    now = time.time()
    old = sign(BODY, [KEY], timestamp=int(now) - 301)
    future = sign(BODY, [KEY], timestamp=int(now) + 301)
    assert not verify(old, BODY, [KEY], now=now)
    assert not verify(future, BODY, [KEY], now=now)
    assert verify(sign(BODY, [KEY], timestamp=int(now) - 299), BODY, [KEY], now=now)


def test_timestamp_cannot_be_swapped_under_a_valid_signature() -> None:
    header = sign(BODY, [KEY], timestamp=1000)
    forged = header.replace("t=1000", f"t={int(time.time())}")
    assert not verify(forged, BODY, [KEY])


@given(st.text(max_size=300))
def test_arbitrary_header_never_verifies_and_never_raises(header: str) -> None:
    assert verify(header, BODY, [KEY]) is False
