"""Who the user is: credentials signed with HMAC-SHA256 under the server secret ``QAC_SECRET``.

A client never names a user by a bare id. It presents a token, one of two kinds:

* ``a`` -- an anonymous user id the server issues (128 random bits, 32 hex digits);
* ``s`` -- a signed-in user id the embedding site signs with the same secret.

Token format (ASCII, at most :data:`MAX_TOKEN` characters, five dot-separated fields)::

    v1.<kind>.<b64 user id>.<expires>.<b64 signature>

``b64`` is URL-safe base64 of UTF-8 without ``=`` padding; ``expires`` is unix seconds in
decimal; the signature is HMAC-SHA256 under the secret (its UTF-8 bytes) over the ASCII text
before the last dot. Every token expires: the site picks how soon for its signed-in users; an
anonymous token lives :data:`ANONYMOUS_LIFETIME` (or what the server is configured with) and
the server renews it when it is presented a day or more after it was issued
(:func:`renew_anonymous`). An anonymous token with ``0`` (never expiring, as issued before) is
refused as expired.

:meth:`Signer.sign_value` signs other values (such as session ids) as ``v1.p.<b64 value>.<b64
signature>`` with the MAC over ``v1.p.<b64 purpose>.<b64 value>``: the second field of what is
MACed says what it is, so a value signed for one purpose never verifies for another purpose nor
as a user token.

An embedding site signs a signed-in user without this project::

    import base64, hashlib, hmac, time

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")

    def qac_token(secret: str, user_id: str, ttl: int = 3600) -> str:
        text = f"v1.s.{b64(user_id.encode('utf-8'))}.{int(time.time()) + ttl}"
        mac = hmac.new(secret.encode("utf-8"), text.encode("ascii"), hashlib.sha256).digest()
        return f"{text}.{b64(mac)}"
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from indexer.errors import QacError

VERSION = "v1"
ANONYMOUS = "a"
SIGNED_IN = "s"
KINDS = (ANONYMOUS, SIGNED_IN)
MAX_TOKEN = 512
MAX_USER_ID = 256  # UTF-8 bytes of a signed-in user id
MIN_SECRET = 16
ANONYMOUS_LIFETIME = 30 * 86400.0  # seconds an anonymous token lives after it was last renewed
RENEW_AFTER = 86400.0  # an anonymous token presented this long after it was issued is renewed

_TEXT = re.compile(r"[A-Za-z0-9_.-]+")
_B64 = re.compile(r"[A-Za-z0-9_-]*")
_EXPIRES = re.compile(r"0|[1-9][0-9]{0,11}")
_ANONYMOUS_ID = re.compile(r"[0-9a-f]{32}")
_PURPOSE = re.compile(r"[a-z][a-z0-9_-]{0,31}")


class TokenError(QacError):
    """A token that does not verify; ``code`` says why in one word."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class SecretError(QacError):
    """The server secret is missing, too short or cannot be stored."""


@dataclass(frozen=True)
class User:
    """A verified user: ``kind`` is ``"a"`` (anonymous) or ``"s"`` (signed in by the site)."""

    id: str
    kind: str

    @property
    def key(self) -> str:
        """The storage key: an anonymous id never collides with a site's user id."""
        return f"{self.kind}:{self.id}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """Strict decoding: only the canonical unpadded form of some bytes."""
    if _B64.fullmatch(text) is None or len(text) % 4 == 1:
        raise ValueError("not base64")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:
        raise ValueError("not canonical base64")
    return data


class Signer:
    """Signs and verifies tokens under one secret (at least :data:`MIN_SECRET` bytes)."""

    def __init__(self, secret: bytes, clock: Callable[[], float] = time.time):
        if not isinstance(secret, bytes) or len(secret) < MIN_SECRET:
            raise ValueError(f"the secret must be at least {MIN_SECRET} bytes")
        self._secret = secret
        self._clock = clock

    def now(self) -> float:
        """The signer's clock: unix seconds."""
        return self._clock()

    def _mac(self, text: str) -> str:
        return _b64(hmac.new(self._secret, text.encode("ascii"), hashlib.sha256).digest())

    def _check_mac(self, token: str) -> list[str]:
        """The fields of a well-formed token whose signature is right."""
        if not isinstance(token, str) or not token:
            raise TokenError("malformed", "empty token")
        if len(token) > MAX_TOKEN:
            raise TokenError("too_long", f"token of {len(token)} characters; the limit is {MAX_TOKEN}")
        if _TEXT.fullmatch(token) is None:
            raise TokenError("malformed", "token has characters outside URL-safe base64")
        fields = token.split(".")
        if fields[0] != VERSION:
            raise TokenError("version", "unknown token version")
        text, _, mac = token.rpartition(".")
        if not hmac.compare_digest(self._mac(text), mac):
            raise TokenError("signature", "bad token signature")
        return fields

    def sign(self, kind: str, user: str, expires: int = 0) -> str:
        """A token for ``user`` of ``kind``, valid until ``expires`` (unix seconds, > 0)."""
        if kind not in KINDS:
            raise ValueError(f"unknown user kind {kind!r}")
        if expires <= 0:
            raise ValueError("a token must expire")
        if kind == ANONYMOUS and _ANONYMOUS_ID.fullmatch(user) is None:
            raise ValueError("an anonymous id is 32 hex digits")
        raw = user.encode("utf-8")
        if not 0 < len(raw) <= MAX_USER_ID:
            raise ValueError(f"a user id is 1 to {MAX_USER_ID} bytes")
        stamp = str(int(expires))
        if _EXPIRES.fullmatch(stamp) is None:
            raise ValueError("expiry out of range")
        text = f"{VERSION}.{kind}.{_b64(raw)}.{stamp}"
        return f"{text}.{self._mac(text)}"

    def verify(self, token: str, now: float | None = None) -> User:
        """The user a token names; raises :class:`TokenError` unless it is valid at ``now``."""
        fields = self._check_mac(token)
        if fields[1] not in KINDS:
            raise TokenError("kind", "unknown token kind")
        if len(fields) != 5:
            raise TokenError("malformed", "not a user token")
        _, kind, b64_user, stamp, _ = fields
        try:
            user = _unb64(b64_user).decode("utf-8")
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise TokenError("malformed", "bad user id in token") from None
        if _EXPIRES.fullmatch(stamp) is None or not user or len(user.encode("utf-8")) > MAX_USER_ID:
            raise TokenError("malformed", "bad token fields")
        expires = int(stamp)
        if kind == SIGNED_IN and expires == 0:
            raise TokenError("malformed", "a signed-in token without expiry")
        if kind == ANONYMOUS and _ANONYMOUS_ID.fullmatch(user) is None:
            raise TokenError("malformed", "bad anonymous id")
        if expires == 0:  # issued before anonymous tokens expired: no longer honoured
            raise TokenError("expired", "an anonymous token without expiry")
        if expires and (self._clock() if now is None else now) >= expires:
            raise TokenError("expired", "token expired")
        return User(user, kind)

    def sign_value(self, purpose: str, value: str) -> str:
        """``value`` signed for ``purpose`` (a short lowercase word such as ``"session"``)."""
        if _PURPOSE.fullmatch(purpose) is None:
            raise ValueError(f"bad purpose {purpose!r}")
        b64_value = _b64(value.encode("utf-8"))
        mac = self._mac(f"{VERSION}.p.{_b64(purpose.encode('ascii'))}.{b64_value}")
        return f"{VERSION}.p.{b64_value}.{mac}"

    def verify_value(self, purpose: str, signed: str) -> str:
        """The value :meth:`sign_value` signed for ``purpose``; raises :class:`TokenError`."""
        if _PURPOSE.fullmatch(purpose) is None:
            raise ValueError(f"bad purpose {purpose!r}")
        if not isinstance(signed, str) or len(signed) > MAX_TOKEN or _TEXT.fullmatch(signed) is None:
            raise TokenError("too_long" if isinstance(signed, str) and len(signed) > MAX_TOKEN else "malformed",
                             "not a signed value")
        fields = signed.split(".")
        if fields[0] != VERSION:
            raise TokenError("version", "unknown token version")
        if len(fields) != 4 or fields[1] != "p":
            raise TokenError("kind", "not a signed value")
        text = f"{VERSION}.p.{_b64(purpose.encode('ascii'))}.{fields[2]}"
        if not hmac.compare_digest(self._mac(text), fields[3]):
            raise TokenError("signature", "bad signature")
        try:
            return _unb64(fields[2]).decode("utf-8")
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise TokenError("malformed", "bad value") from None


def issue_anonymous(signer: Signer, lifetime: float = ANONYMOUS_LIFETIME,
                    user: User | None = None) -> tuple[str, User]:
    """A token valid ``lifetime`` seconds from now for ``user`` (renewed), or for a new anonymous
    user (128 random bits) without one."""
    if user is None:
        user = User(secrets.token_hex(16), ANONYMOUS)
    elif user.kind != ANONYMOUS:
        raise ValueError("only anonymous tokens are issued by the server")
    return signer.sign(ANONYMOUS, user.id, math.ceil(signer.now() + lifetime)), user


def renew_anonymous(signer: Signer, token: str, user: User, lifetime: float = ANONYMOUS_LIFETIME) -> str:
    """``token``, a verified token of anonymous ``user``; or, once it was issued
    :data:`RENEW_AFTER` (at most half its lifetime) ago, a new one valid ``lifetime`` from now."""
    expires = int(token.split(".")[3])
    if expires - signer.now() > lifetime - min(RENEW_AFTER, lifetime / 2):
        return token
    return issue_anonymous(signer, lifetime, user)[0]


def default_secret_path() -> Path:
    """``$XDG_STATE_HOME/qac/secret``, else ``~/.local/state/qac/secret``."""
    state = os.environ.get("XDG_STATE_HOME")
    base = Path(state) if state and os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "qac" / "secret"


def _checked(secret: str, where: str) -> bytes:
    if len(secret) < MIN_SECRET:
        raise SecretError(f"{where} is {len(secret)} characters; it must be at least {MIN_SECRET}")
    return secret.encode("utf-8")


def load_secret(environ: Mapping[str, str], path: Path) -> tuple[bytes, bool]:
    """The server secret and whether it was generated just now.

    ``QAC_SECRET`` from ``environ`` if set, else the text in ``path``, else 32 random bytes
    written to ``path`` (as 43 URL-safe base64 characters, mode 0600, atomically; if two
    processes race, both end up with the one that was linked in first). The secret is the
    UTF-8 bytes of that text (of the file: without surrounding whitespace), so the file's
    content can be handed out as ``QAC_SECRET``.
    """
    if "QAC_SECRET" in environ:
        return _checked(environ["QAC_SECRET"], "QAC_SECRET"), False
    try:
        return _checked(path.read_text("utf-8").strip(), f"the secret in {path}"), False
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretError(f"cannot read the secret in {path}: {exc.__class__.__name__}") from exc
    text = _b64(secrets.token_bytes(32))
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".secret-")  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(text + "\n")
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # atomic and never replaces a secret another process wrote
            except FileExistsError:
                return _checked(path.read_text("utf-8").strip(), f"the secret in {path}"), False
            except OSError:  # a file system without hard links
                os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        dirfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
    except OSError as exc:
        raise SecretError(f"cannot write a new secret to {path}: {exc.__class__.__name__}") from exc
    return text.encode("ascii"), True
