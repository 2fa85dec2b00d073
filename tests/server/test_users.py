"""User credentials: signed tokens, signed values, the server secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from indexer.errors import QacError
from server import users
from server.users import (
    MAX_TOKEN,
    SecretError,
    Signer,
    TokenError,
    User,
    default_secret_path,
    issue_anonymous,
    load_secret,
    renew_anonymous,
)

SECRET = "correct horse battery staple"
NOW = 1_700_000_000

# The embedding site's snippet, exactly as the module docstring shows it.
SITE_SNIPPET = '''\
import base64, hashlib, hmac, time

def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")

def qac_token(secret: str, user_id: str, ttl: int = 3600) -> str:
    text = f"v1.s.{b64(user_id.encode('utf-8'))}.{int(time.time()) + ttl}"
    mac = hmac.new(secret.encode("utf-8"), text.encode("ascii"), hashlib.sha256).digest()
    return f"{text}.{b64(mac)}"
'''


def signer() -> Signer:
    return Signer(SECRET.encode())


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def mac_of(text: str, secret: bytes = SECRET.encode()) -> str:
    return b64(hmac.new(secret, text.encode("ascii"), hashlib.sha256).digest())


def code_of(token: str, now: float = NOW, s: Signer | None = None) -> str:
    with pytest.raises(TokenError) as info:
        (s or signer()).verify(token, now)
    return info.value.code


def test_the_site_snippet_in_the_docstring_makes_tokens_that_verify() -> None:
    assert textwrap.indent(SITE_SNIPPET, "    ") in (users.__doc__ or "")
    namespace: dict[str, object] = {}
    exec(SITE_SNIPPET, namespace)
    token = namespace["qac_token"](SECRET, "alice@example.com")  # type: ignore[operator]
    assert signer().verify(token, time.time()) == User("alice@example.com", "s")
    assert code_of(token, time.time() + 3601) == "expired"
    assert code_of(token, time.time(), Signer(b"another secret of 16+ bytes")) == "signature"


def test_a_signed_in_token_verifies_until_it_expires() -> None:
    token = signer().sign("s", "bob", NOW + 60)
    assert token.startswith("v1.s.") and token.isascii() and "=" not in token
    assert signer().verify(token, NOW + 59.9) == User("bob", "s")
    assert code_of(token, NOW + 60) == "expired"
    with pytest.raises(ValueError):
        signer().sign("s", "bob", 0)


def test_anonymous_users_are_random_and_expire_after_their_lifetime() -> None:
    s = Signer(SECRET.encode(), clock=lambda: NOW)
    token, user = issue_anonymous(s, 3600)
    other_token, other = issue_anonymous(s, 3600)
    assert user.kind == "a" and len(user.id) == 32 and int(user.id, 16) >= 0
    assert user != other and token != other_token
    assert token.split(".")[3] == str(NOW + 3600)
    assert s.verify(token, NOW + 3599) == user
    assert code_of(token, NOW + 3600, s) == "expired"
    assert user.key == "a:" + user.id
    assert issue_anonymous(s)[0].split(".")[3] == str(NOW + 30 * 86400)  # the documented default


def test_an_anonymous_token_is_renewed_for_the_same_user() -> None:
    clock = [float(NOW)]
    s = Signer(SECRET.encode(), clock=lambda: clock[0])
    token, user = issue_anonymous(s, 3600)
    clock[0] += 3000
    renewed, again = issue_anonymous(s, 3600, s.verify(token))
    assert again == user and s.verify(renewed, NOW + 6000) == user
    assert code_of(token, NOW + 6000, s) == "expired"
    with pytest.raises(ValueError):
        issue_anonymous(s, 3600, User("bob", "s"))  # the site signs its users, never the server


def test_an_anonymous_token_without_expiry_is_refused() -> None:
    forever = f"v1.a.{b64(b'0123456789abcdef0123456789abcdef')}.0"  # as issued before they expired
    assert code_of(f"{forever}.{mac_of(forever)}", 4e9) == "expired"
    with pytest.raises(ValueError):
        signer().sign("a", "0123456789abcdef0123456789abcdef", 0)


def test_keys_of_anonymous_and_signed_in_users_never_collide() -> None:
    anonymous = signer().verify(issue_anonymous(signer())[0], NOW)
    site = signer().verify(signer().sign("s", anonymous.id, NOW + 1), NOW)
    assert anonymous.id == site.id and anonymous.key != site.key
    assert site.key == "s:" + anonymous.id


def test_a_forged_signature_is_refused() -> None:
    token = signer().sign("s", "bob", NOW + 60)
    text = token.rpartition(".")[0]
    assert code_of(f"{text}.{mac_of(text, b'not the server secret!')}") == "signature"
    assert code_of(f"{text}.{'A' * 43}") == "signature"
    assert code_of(f"{text}.") == "signature"
    assert code_of(text) == "signature"  # the signature stripped


def test_a_tampered_user_id_is_refused() -> None:
    token = signer().sign("s", "bob", NOW + 60)
    fields = token.split(".")
    fields[2] = b64(b"admin")
    assert code_of(".".join(fields)) == "signature"
    fields = token.split(".")
    fields[3] = str(NOW + 10**6)  # a later expiry
    assert code_of(".".join(fields)) == "signature"
    fields = token.split(".")
    fields[1] = "a"
    assert code_of(".".join(fields)) == "signature"


@given(st.data())
def test_changing_any_character_of_a_token_breaks_it(data: st.DataObject) -> None:
    token = signer().sign("s", data.draw(st.text(min_size=1, max_size=40)), NOW + 60)
    i = data.draw(st.integers(0, len(token) - 1))
    char = data.draw(st.sampled_from("abcXYZ019_-.=+/ é"))
    if char == token[i]:
        return
    with pytest.raises(TokenError):
        signer().verify(token[:i] + char + token[i + 1:], NOW)


@given(st.text(min_size=1, max_size=60).filter(lambda s: len(s.encode()) <= 256))
def test_any_user_id_round_trips(user_id: str) -> None:
    assert signer().verify(signer().sign("s", user_id, NOW + 1), NOW) == User(user_id, "s")


@pytest.mark.parametrize("bare", ["bob", "0123456789abcdef0123456789abcdef", "", "a:bob", "s:bob"])
def test_a_bare_id_is_not_a_credential(bare: str) -> None:
    assert code_of(bare) in {"malformed", "version"}


def test_malformed_long_and_unknown_tokens_are_refused() -> None:
    assert code_of("v1.s.Ym9i.99999999999.x" + "A" * MAX_TOKEN) == "too_long"
    assert code_of("v1.s.Ym9i.1.sig with spaces") == "malformed"
    assert code_of("v1.s.Ym9i.1.sig\n") == "malformed"
    v2 = f"v2.s.{b64(b'bob')}.{NOW + 60}"
    assert code_of(f"{v2}.{mac_of(v2)}") == "version"
    odd = f"v1.x.{b64(b'bob')}.{NOW + 60}"
    assert code_of(f"{odd}.{mac_of(odd)}") == "kind"
    forever = f"v1.s.{b64(b'bob')}.0"  # signed-in tokens must expire
    assert code_of(f"{forever}.{mac_of(forever)}") == "malformed"
    assert b64(b"bo") == "Ym8"
    loose = f"v1.s.Ym9.{NOW + 60}"  # non-canonical base64 of b"bo"
    assert code_of(f"{loose}.{mac_of(loose)}") == "malformed"
    assert code_of(f"v1.s.Ym9i=.{NOW + 60}.{mac_of('v1.s.Ym9i=.1')}") == "malformed"
    not_hex = f"v1.a.{b64(b'bob')}.0"
    assert code_of(f"{not_hex}.{mac_of(not_hex)}") == "malformed"
    assert isinstance(TokenError("x", "y"), QacError)


def test_signed_values_are_bound_to_their_purpose() -> None:
    s = signer()
    signed = s.sign_value("session", "abcDEF123_-")
    assert s.verify_value("session", signed) == "abcDEF123_-"
    with pytest.raises(TokenError) as info:
        s.verify_value("csrf", signed)
    assert info.value.code == "signature"
    with pytest.raises(TokenError):
        s.verify(signed, NOW)  # a session id is no user
    with pytest.raises(TokenError):
        s.verify_value("session", s.sign("s", "abcDEF123_-", NOW + 60))  # nor a user a session id
    with pytest.raises(TokenError):
        s.verify_value("session", "abcDEF123_-")  # bare
    with pytest.raises(TokenError):
        Signer(b"another secret of 16+ bytes").verify_value("session", signed)
    b64_value, mac = signed.split(".")[2:]
    with pytest.raises(TokenError):
        s.verify(f"v1.p.{b64(b'session')}.{b64_value}.{mac}", NOW)  # the purpose smuggled in
    with pytest.raises(TokenError):
        s.verify_value("session", f"v1.p.{b64(b'other')}.{mac}")


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        Signer(b"x" * 15)
    Signer(b"x" * 16)
    with pytest.raises(SecretError, match="at least 16"):
        load_secret({"QAC_SECRET": "too short"}, Path("/nonexistent/secret"))


def test_the_environment_secret_wins(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("the secret in the file\n")
    assert load_secret({"QAC_SECRET": SECRET}, path) == (SECRET.encode(), False)
    assert load_secret({}, path) == (b"the secret in the file", False)
    path.write_text("short\n")
    with pytest.raises(SecretError):
        load_secret({}, path)


def test_a_generated_secret_is_persisted_privately_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "qac" / "secret"
    secret, generated = load_secret({}, path)
    assert generated and len(secret) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip().encode() == secret
    assert load_secret({}, path) == (secret, False)
    assert os.listdir(path.parent) == ["secret"]  # no temporary file left behind
    other, generated = load_secret({}, tmp_path / "elsewhere" / "secret")
    assert generated and other != secret
    Signer(secret)


def test_the_default_secret_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_secret_path() == tmp_path / "qac" / "secret"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_secret_path() == tmp_path / "home" / ".local" / "state" / "qac" / "secret"


def test_an_anonymous_token_a_day_old_is_renewed_when_presented() -> None:
    clock = [float(NOW)]
    s = Signer(SECRET.encode(), clock=lambda: clock[0])
    token, user = issue_anonymous(s, 30 * 86400)
    clock[0] += 86400 - 1
    assert renew_anonymous(s, token, user, 30 * 86400) == token  # fresh: the same token
    clock[0] += 1
    renewed = renew_anonymous(s, token, user, 30 * 86400)
    assert renewed != token and s.verify(renewed, NOW + 31 * 86400 - 1) == user
    assert code_of(token, NOW + 30 * 86400, s) == "expired"
    short, short_user = issue_anonymous(s, 600)  # a short lifetime renews after half of it
    clock[0] += 299
    assert renew_anonymous(s, short, short_user, 600) == short
    clock[0] += 1
    assert renew_anonymous(s, short, short_user, 600) != short
