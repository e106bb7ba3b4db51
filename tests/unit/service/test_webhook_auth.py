"""The webhook receiver's three authentication schemes, as case tables: what passes, and every way to fail."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from agentvm.service.webhook import auth

SECRET = "s3cret-s3cret-s3cret"
BODY = b'{"hello": "world"}'
NOW = 1_800_000_000


def github_header(secret: str = SECRET, body: bytes = BODY) -> str:
    # computed here independently of the module, the way GitHub documents it
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_the_signers_match_the_documented_computation():
    assert auth.sign_github(SECRET, BODY) == github_header()
    mac = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert auth.sign_agentvm(SECRET, BODY, NOW) == f"t={NOW},v1={mac}"


@pytest.mark.parametrize(
    ("header", "body", "expected"),
    [
        (github_header(), BODY, None),
        (github_header().upper().replace("SHA256=", "sha256="), BODY, None),  # hex case does not matter
        (f"  {github_header()}  ", BODY, None),
        (None, BODY, "no X-Hub-Signature-256"),
        ("", BODY, "no X-Hub-Signature-256"),
        (github_header(), BODY + b" ", "does not match"),  # the raw body, byte for byte
        (github_header(secret="another-secret-value"), BODY, "does not match"),
        (github_header()[:-1], BODY, "not sha256="),
        (github_header().replace("sha256=", "sha1="), BODY, "not sha256="),
        ("sha256=" + "g" * 64, BODY, "not sha256="),
        ("sha256=" + "é" * 64, BODY, "not sha256="),
    ],
)
def test_github(header, body, expected):
    result = auth.verify_github(SECRET, body, header)
    assert result is None if expected is None else expected in result


def agentvm_header(t: int, body: bytes = BODY, secret: str = SECRET) -> str:
    return auth.sign_agentvm(secret, body, t)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (agentvm_header(NOW), None),
        (agentvm_header(NOW - 300), None),  # the edge of the window, both ways
        (agentvm_header(NOW + 300), None),
        (agentvm_header(NOW - 301), "outside the replay window"),
        (agentvm_header(NOW + 301), "outside the replay window"),
        (agentvm_header(0), "outside the replay window"),
        (agentvm_header(NOW, secret="another-secret-value"), "does not match"),
        (agentvm_header(NOW).replace(f"t={NOW}", f"t={NOW - 1}"), "does not match"),  # t is signed
        (agentvm_header(NOW, body=b"{}"), "does not match"),
        (agentvm_header(NOW) + ",v1=" + "0" * 64, None),  # one of several v1 matches (rotation)
        (f"t={NOW},v1={'0' * 64},{agentvm_header(NOW).split(',')[1]}", None),
        (f"t={NOW}", "not t=<unix seconds>"),
        (agentvm_header(NOW).split(",")[1], "not t=<unix seconds>"),
        (f"t=-5,v1={'0' * 64}", "not t=<unix seconds>"),
        (f"t=1e9,v1={'0' * 64}", "not t=<unix seconds>"),
        (f"t={NOW},t={NOW},v1={'0' * 64}", "not t=<unix seconds>"),
        (f"t={'9' * 40},v1={'0' * 64}", "not t=<unix seconds>"),
        (f"t={NOW},v1=abc", "not t=<unix seconds>"),
        ("garbage", "not t=<unix seconds>"),
        (None, "no X-Agentvm-Signature"),
    ],
)
def test_agentvm_and_its_replay_window(header, expected):
    result = auth.verify_agentvm(SECRET, BODY, header, NOW, 300)
    assert result is None if expected is None else expected in result


def test_the_replay_window_is_the_routes():
    header = agentvm_header(NOW - 100)
    assert auth.verify_agentvm(SECRET, BODY, header, NOW, 300) is None
    assert "replay window of 60 s" in auth.verify_agentvm(SECRET, BODY, header, NOW, 60)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"Bearer {SECRET}", None),
        (f"bearer {SECRET}", None),
        (f"Bearer  {SECRET} ", None),
        (f"Bearer {SECRET}x", "does not match"),
        (f"Bearer {SECRET[:-1]}", "does not match"),
        ("Bearer ", "not Bearer <token>"),
        (f"Basic {SECRET}", "not Bearer <token>"),
        (SECRET, "not Bearer <token>"),
        ("Bearer t\udcff", "does not match"),
        (None, "no Authorization"),
    ],
)
def test_bearer(header, expected):
    result = auth.verify_bearer(SECRET, header)
    assert result is None if expected is None else expected in result


@pytest.mark.parametrize("scheme", auth.SCHEMES)
def test_verify_dispatches_and_refuses_huge_headers(scheme):
    good = {
        "github": github_header(),
        "agentvm": agentvm_header(NOW),
        "bearer": f"Bearer {SECRET}",
    }[scheme]
    name = auth.HEADERS[scheme]
    assert auth.verify(scheme, SECRET, BODY, {name: good}, NOW, 300) is None
    assert "too long" in auth.verify(scheme, SECRET, BODY, {name: "x" * 5000}, NOW, 300)
    assert auth.verify(scheme, SECRET, BODY, {}, NOW, 300) is not None


def test_no_reason_carries_the_secret():
    for reason in (
        auth.verify_github(SECRET, BODY, "sha256=" + "0" * 64),
        auth.verify_agentvm(SECRET, BODY, f"t={NOW},v1={'0' * 64}", NOW, 300),
        auth.verify_bearer(SECRET, "Bearer wrong"),
    ):
        assert reason and SECRET not in reason
