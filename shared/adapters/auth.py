"""Staff sign-in: Ed25519-signed bearer tokens (JWT), who the bearer is, and what they may do.

Tokens are JWTs signed with EdDSA (Ed25519). The header's ``kid`` names the signing key: the
RFC 7638 thumbprint of its public key, so a key file and its JWKS entry agree on the id
without any bookkeeping. Claims: ``sub`` (user), ``role``, ``org`` (organisation code),
``name``, ``iss``, ``aud``, ``iat``, ``exp``.

The embedded default signs with a local key pair (``caseflow keys init`` / ``caseflow up``
create it under ``var/keys``; ``caseflow token`` signs); production verifies against
configured public keys (PEM) or an identity provider's JWKS URL.

The HTTP side — the FastAPI dependencies that find the app's verifier and organisations
and turn a request's token into a :class:`SignedInStaff` — is ``shared.web.auth``; this
module imports no web framework.

**Claims are checked against the registry** (``shared/data/organisations.yaml``): a genuine
token is still refused when its organisation is unknown (401), its role does not suit the
organisation's kind or its special permissions are not ones the registry grants that role
(403); see :func:`check_claims`.

Tokens are never logged: failures are logged by reason and key id only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import jwt
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared.domain.identity import unreadable
from shared.domain.orgs import Organisation, Organisations, OrgKind

if TYPE_CHECKING:
    from shared.settings import ServiceSettings

log = structlog.get_logger("caseflow.auth")

ALGORITHM = "EdDSA"
ISSUER = "caseflow"
AUDIENCE = "caseflow"
LEEWAY = timedelta(seconds=30)
"""Clock skew tolerated on ``exp`` and ``iat`` between the signer and this service."""
DEFAULT_TTL = timedelta(hours=12)
DEFAULT_KEY_DIR = Path("var/keys")
PRIVATE_KEY_NAME = "jwt-ed25519.pem"
PUBLIC_KEY_NAME = "jwt-ed25519.pub.pem"
REALM = "caseflow"


class Role(StrEnum):
    """What a member of staff does."""

    window_clerk = "window_clerk"
    reviewer = "reviewer"
    station_head = "station_head"
    department_officer = "department_officer"
    auditor = "auditor"

    @property
    def label(self) -> str:
        """In words, for messages: ``window clerk``."""
        return self.value.replace("_", " ")


ROLE_ORG_KINDS: dict[Role, frozenset[OrgKind]] = {
    Role.window_clerk: frozenset({OrgKind.station}),
    Role.reviewer: frozenset({OrgKind.station}),
    Role.station_head: frozenset({OrgKind.station}),
    Role.department_officer: frozenset({OrgKind.city_department, OrgKind.town_government}),
    Role.auditor: frozenset({OrgKind.city_department}),
}
"""Which kinds of organisation each role belongs to. Auditors, moreover, only to the one
marked as the audit body (:data:`AUDIT_BODY_ROLES`)."""

AUDIT_BODY_ROLES = frozenset({Role.auditor})
"""Roles that belong to the audit body alone, not to any city department."""


def with_article(words: str) -> str:
    return f"{'an' if words[:1] in 'aeiou' else 'a'} {words}"


def check_role_fits_org(role: Role, organisation: Organisation) -> None:
    """Raise ``ValueError`` (with a readable reason) if ``role`` can't belong to that org."""
    kinds = ROLE_ORG_KINDS[role]
    kind = organisation.kind.value.replace("_", " ")
    if organisation.kind not in kinds:
        wanted = " or ".join(with_article(k.value.replace("_", " ")) for k in sorted(kinds))
        raise ValueError(
            f"{with_article(role.label)} works at {wanted}, "
            f"but {organisation.code} is {with_article(kind)}"
        )
    if role in AUDIT_BODY_ROLES and not organisation.audit_body:
        raise ValueError(
            f"{with_article(role.label)} works at the city's audit body, "
            f"but {organisation.code} is {with_article(kind)} that is not it"
        )


class ClaimsRefused(Exception):
    """A genuine token whose claims the registry doesn't bear out; ``str()`` says why."""

    def __init__(self, message: str, reason: str, status: int) -> None:
        super().__init__(message)
        self.reason = reason  # short, for logs
        self.status = status  # 401: not someone caseflow knows; 403: not allowed as claimed


USER_ID_MAX_LENGTH = 100
"""The longest user id: the log's ``actor_user`` (and every other column naming a user)
holds 100 characters."""


def user_id_problem(user: str) -> str | None:
    """Why ``user`` can't be a staff user id, or None: it is empty, longer than the log
    keeps, or doesn't read as written (the rule of person names,
    :func:`shared.domain.identity.unreadable`: it ends up in events, logs and worklists)."""
    if not user:
        return "is empty"
    if len(user) > USER_ID_MAX_LENGTH:
        return f"is longer than {USER_ID_MAX_LENGTH} characters"
    found = unreadable(user)
    if found is None:
        return None
    if found.kind == "control":
        return f"contains the control character U+{ord(found.char):04X}"
    if found.kind == "direction":
        return f"contains the direction control U+{ord(found.char):04X}, which changes how it reads"
    return "has no visible characters"


def check_claims(staff: SignedInStaff, organisations: Organisations) -> None:
    """Raise :class:`ClaimsRefused` unless the token's user id is one caseflow can record
    (:func:`user_id_problem`) and the registry bears out what the token claims: the
    organisation exists, the role suits it, and each special permission is one the
    registry grants to that role."""
    if problem := user_id_problem(staff.user):
        raise ClaimsRefused(
            f"sign in again: the user id in your token {problem}; ask your administrator for "
            "a token with a proper user id (令牌中的用户标识无效)",
            "bad user id",
            401,
        )
    if staff.org not in organisations:
        raise ClaimsRefused(
            f"sign in again: your token names an organisation caseflow doesn't know "
            f"({staff.org!r}); ask your administrator for a token of your organisation "
            "(令牌所属机构不存在)",
            "unknown org",
            401,
        )
    try:
        check_role_fits_org(staff.role, organisations.get(staff.org))
    except ValueError as err:
        raise ClaimsRefused(
            f"your token doesn't fit: {err} (岗位与所属机构不符)", "role does not fit org", 403
        ) from None
    for permission in sorted(staff.permissions):
        grant = organisations.special_permissions.get(permission)
        if grant is None:
            raise ClaimsRefused(
                f"your token carries the special permission {permission!r}, which caseflow "
                "doesn't grant (无此特殊权限)",
                "unknown permission",
                403,
            )
        if staff.role.value not in grant.roles:
            holders = " or ".join(with_article(Role(r).label) for r in grant.roles)
            raise ClaimsRefused(
                f"your token carries the special permission {permission!r}, which only "
                f"{holders} may hold; you are signed in as {with_article(staff.role.label)} "
                "(该岗位不得持有此特殊权限)",
                "permission not granted",
                403,
            )


@dataclass(frozen=True)
class SignedInStaff:
    """The signed-in member of staff a request acts for."""

    user: str
    role: Role
    org: str
    name: str | None = None
    permissions: frozenset[str] = frozenset()
    """Special permissions granted beside the role (e.g. ``reopen`` a closed case)."""


# --- keys ---------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: Ed25519PublicKey) -> str:
    """The key's RFC 7638 JWK thumbprint (SHA-256, base64url): the ``kid`` of its tokens."""
    canonical = json.dumps(
        {"crv": "Ed25519", "kty": "OKP", "x": _b64url(_raw_public(public_key))},
        separators=(",", ":"),
        sort_keys=True,
    )
    return _b64url(hashlib.sha256(canonical.encode("ascii")).digest())


def public_jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    """The public key as a JWK for a JWKS document."""
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": _b64url(_raw_public(public_key)),
        "kid": key_id(public_key),
        "use": "sig",
        "alg": ALGORITHM,
    }


def jwks(public_keys: Iterable[Ed25519PublicKey]) -> dict[str, list[dict[str, str]]]:
    """A JWKS document (``{"keys": [...]}``) of these public keys."""
    return {"keys": [public_jwk(k) for k in public_keys]}


@dataclass(frozen=True)
class KeyPair:
    """Where one Ed25519 key pair lives on disk."""

    directory: Path
    private_name: str = PRIVATE_KEY_NAME
    public_name: str = PUBLIC_KEY_NAME

    @property
    def private_path(self) -> Path:
        return self.directory / self.private_name

    @property
    def public_path(self) -> Path:
        return self.directory / self.public_name

    def exists(self) -> bool:
        return self.private_path.is_file() and self.public_path.is_file()


def ensure_key_pair(
    directory: Path = DEFAULT_KEY_DIR,
    *,
    private_name: str = PRIVATE_KEY_NAME,
    public_name: str = PUBLIC_KEY_NAME,
) -> tuple[KeyPair, bool]:
    """Create the signing key pair in ``directory`` unless it is there; ``(pair, created)``.

    The private key is written owner-only (0600). An existing pair is never replaced: that
    would sign everyone out. Other key pairs (the audit's) pass their own file names.
    """
    pair = KeyPair(directory, private_name, public_name)
    if pair.exists():
        return pair, False
    if pair.private_path.exists() or pair.public_path.exists():
        raise FileExistsError(
            f"{directory} holds only half a key pair ({private_name} and {public_name} "
            "belong together); move the leftover file away and try again"
        )
    directory.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    fd = os.open(pair.private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(private_pem)
    pair.public_path.write_bytes(public_pem)
    return pair, True


_PEM_BLOCK = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.DOTALL)


def load_public_keys(path: Path) -> list[Ed25519PublicKey]:
    """The Ed25519 public keys in a PEM file (several blocks allowed, for key rotation)."""
    blocks = _PEM_BLOCK.findall(path.read_bytes())
    if not blocks:
        raise ValueError(f"{path} holds no PEM public key")
    keys = []
    for block in blocks:
        key = serialization.load_pem_public_key(block)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"{path} holds a {type(key).__name__}, not an Ed25519 public key")
        keys.append(key)
    return keys


@dataclass(frozen=True)
class SigningKey:
    """A private key and the ``kid`` its tokens carry."""

    private_key: Ed25519PrivateKey
    kid: str

    @classmethod
    def load(cls, directory: Path = DEFAULT_KEY_DIR) -> SigningKey:
        """The private key of the pair in ``directory``."""
        path = KeyPair(directory).private_path
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} holds a {type(key).__name__}, not an Ed25519 private key")
        return cls(key, key_id(key.public_key()))


def issue_token(
    staff: SignedInStaff,
    key: SigningKey,
    *,
    ttl: timedelta = DEFAULT_TTL,
    issuer: str = ISSUER,
    audience: str = AUDIENCE,
    now: datetime | None = None,
) -> str:
    """A signed bearer token for ``staff``, valid for ``ttl`` from ``now``."""
    if ttl <= timedelta(0):
        raise ValueError("a token's lifetime must be positive")
    issued = (now or datetime.now(UTC)).replace(microsecond=0)
    claims: dict[str, Any] = {
        "sub": staff.user,
        "role": staff.role.value,
        "org": staff.org,
        "iss": issuer,
        "aud": audience,
        "iat": int(issued.timestamp()),
        "exp": int((issued + ttl).timestamp()),
    }
    if staff.name is not None:
        claims["name"] = staff.name
    if staff.permissions:
        claims["perms"] = sorted(staff.permissions)
    return jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})


_TTL_PART = re.compile(r"(\d+)([dhms])")
_TTL_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def parse_ttl(text: str) -> timedelta:
    """``12h``, ``30m``, ``1h30m``, ``7d`` or ``90s`` as a duration."""
    compact = text.strip().lower()
    if not compact or _TTL_PART.sub("", compact):
        raise ValueError(f"{text!r} is not a duration like 12h, 30m, 1h30m or 7d")
    ttl = timedelta()
    for amount, unit in _TTL_PART.findall(compact):
        ttl += timedelta(**{_TTL_UNITS[unit]: int(amount)})
    if ttl <= timedelta(0):
        raise ValueError("a token's lifetime must be positive")
    return ttl


# --- verification -------------------------------------------------------------------------


class AuthConfigError(RuntimeError):
    """The service can't check tokens: no usable key is configured."""


class InvalidToken(Exception):
    """The bearer token can't be accepted; ``str()`` tells the user what to do."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason  # short, for logs and metrics


class KeysUnavailable(Exception):
    """The JWKS endpoint can't be reached and no cached key fits the token."""


class _JwksCache:
    """Keys from a JWKS URL by ``kid``, fetched with :class:`jwt.PyJWKClient`.

    The set is refetched when it is older than ``lifespan`` seconds or a token names an
    unknown ``kid`` (a rotated key), but never more than once per ``cooldown`` seconds, so
    tokens with made-up key ids can't make us hammer the identity provider. If a refetch
    fails, the keys already known keep working.
    """

    def __init__(self, url: str, *, lifespan: float, cooldown: float, timeout: float) -> None:
        self.url = url
        self.client = jwt.PyJWKClient(url, cache_jwk_set=False, timeout=timeout)
        self.lifespan = lifespan
        self.cooldown = cooldown
        self.keys: dict[str, jwt.PyJWK] = {}
        self.fetched_at: float | None = None  # last success
        self.attempted_at: float | None = None
        self.fetches = 0
        self._lock = threading.Lock()

    def _fresh(self) -> bool:
        return self.fetched_at is not None and time.monotonic() - self.fetched_at < self.lifespan

    def cached(self, kid: str) -> jwt.PyJWK | None:
        """The key if it is known and the set is fresh: no I/O."""
        return self.keys.get(kid) if self._fresh() else None

    def fetch(self, kid: str) -> jwt.PyJWK | None:
        """The key for ``kid``, refetching the set if allowed (blocking I/O)."""
        with self._lock:
            if self._fresh() and kid in self.keys:
                return self.keys[kid]
            now = time.monotonic()
            if self.attempted_at is None or now - self.attempted_at >= self.cooldown:
                self.attempted_at = now
                self._refresh()
            if not self.keys:
                raise KeysUnavailable(f"no usable keys from {self.url}")
            return self.keys.get(kid)

    def _refresh(self) -> None:
        try:
            jwk_set = self.client.get_jwk_set(refresh=True)
        except (jwt.PyJWKClientError, jwt.PyJWKSetError) as err:
            log.warning(
                "JWKS fetch failed; keeping the keys already known",
                url=self.url,
                error=str(err),
                known=len(self.keys),
            )
            return
        keys = {
            k.key_id: k
            for k in jwk_set.keys
            if k.key_id and k.public_key_use in (None, "sig") and k.algorithm_name == ALGORITHM
        }
        if not keys:
            log.warning("JWKS has no Ed25519 signing keys", url=self.url)
            return
        self.keys = keys
        self.fetched_at = time.monotonic()
        self.fetches += 1
        log.info("JWKS fetched", url=self.url, kids=sorted(keys))


_EXPIRED = "sign in again: your token expired"
_DAMAGED = "sign in again: your token is damaged or incomplete"
_NOT_GENUINE = "sign in again: your token isn't genuine (its signature doesn't match)"


class TokenVerifier:
    """Checks bearer tokens against public keys given directly and/or from a JWKS URL."""

    def __init__(
        self,
        public_keys: Sequence[Ed25519PublicKey] = (),
        *,
        jwks_url: str | None = None,
        issuer: str = ISSUER,
        audience: str = AUDIENCE,
        leeway: timedelta = LEEWAY,
        jwks_lifespan: float = 300.0,
        jwks_cooldown: float = 30.0,
        jwks_timeout: float = 5.0,
    ) -> None:
        if not public_keys and not jwks_url:
            raise AuthConfigError("a token verifier needs public keys or a JWKS URL")
        self.keys: dict[str, Ed25519PublicKey] = {key_id(k): k for k in public_keys}
        self.jwks = (
            _JwksCache(
                jwks_url, lifespan=jwks_lifespan, cooldown=jwks_cooldown, timeout=jwks_timeout
            )
            if jwks_url
            else None
        )
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> TokenVerifier:
        """Build from ``jwt_public_key_file`` / ``jwks_url`` / ``jwt_issuer`` / ``jwt_audience``.

        Raises :class:`AuthConfigError` naming the environment variables when neither a
        readable key file nor a JWKS URL is configured, or the key file is unusable.
        """
        prefix = str(settings.model_config.get("env_prefix", ""))
        file_var, url_var = f"{prefix}JWT_PUBLIC_KEY_FILE", f"{prefix}JWKS_URL"
        path = settings.jwt_public_key_file
        keys: list[Ed25519PublicKey] = []
        if path is not None and path.exists():
            try:
                keys = load_public_keys(path)
            except (OSError, ValueError) as err:
                raise AuthConfigError(f"{file_var}: can't use {path}: {err}") from None
        elif not settings.jwks_url:
            where = f"{path} does not exist" if path is not None else "it is not set"
            raise AuthConfigError(
                f"no key to check staff tokens with: {file_var} ({where}) and {url_var} is not "
                f"set; run `caseflow keys init` (or `caseflow up`) or set one of them"
            )
        return cls(
            keys,
            jwks_url=settings.jwks_url,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )

    # The two halves of verification: finding the key (maybe I/O), checking the token (CPU).

    def _kid(self, token: str) -> str:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:  # not only DecodeError: a `crit` or a `kid` not text
            raise InvalidToken(_DAMAGED, "malformed") from None
        if header.get("alg") != ALGORITHM:
            raise InvalidToken(_NOT_GENUINE, "algorithm")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken(
                "sign in again: your token doesn't say which key signed it", "no kid"
            )
        return kid

    def _local_key(self, kid: str) -> Ed25519PublicKey | jwt.PyJWK | None:
        if kid in self.keys:
            return self.keys[kid]
        return self.jwks.cached(kid) if self.jwks else None

    def _remote_key(self, kid: str) -> jwt.PyJWK | None:
        return self.jwks.fetch(kid) if self.jwks else None

    def _unknown_key(self, kid: str) -> InvalidToken:
        return InvalidToken(
            "sign in again: your token was signed with a key caseflow doesn't know "
            "(it may have been replaced)",
            "unknown key",
        )

    def _check(self, token: str, key: Ed25519PublicKey | jwt.PyJWK) -> SignedInStaff:
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken(_EXPIRED, "expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken(
                "sign in again: your token is not valid yet (is this computer's clock right?)",
                "not yet valid",
            ) from None
        except jwt.InvalidAudienceError:
            raise InvalidToken(
                "sign in again: your token is for another system, not caseflow", "audience"
            ) from None
        except jwt.InvalidIssuerError:
            raise InvalidToken(
                "sign in again: your token comes from an issuer caseflow doesn't trust", "issuer"
            ) from None
        except jwt.MissingRequiredClaimError as err:
            raise InvalidToken(
                f"sign in again: your token lacks the {err.claim!r} claim", "missing claim"
            ) from None
        except (jwt.InvalidSignatureError, jwt.InvalidAlgorithmError, jwt.InvalidKeyError):
            raise InvalidToken(_NOT_GENUINE, "signature") from None
        except jwt.InvalidTokenError:
            raise InvalidToken(_DAMAGED, "invalid") from None
        return _staff(claims)

    def verify(self, token: str) -> SignedInStaff:
        """The staff member the token names, or :class:`InvalidToken` (may fetch the JWKS)."""
        kid = self._kid(token)
        key = self._local_key(kid) or self._remote_key(kid)
        if key is None:
            raise self._unknown_key(kid)
        return self._check(token, key)

    async def averify(self, token: str) -> SignedInStaff:
        """:meth:`verify` without blocking the event loop: a JWKS fetch runs in a thread."""
        kid = self._kid(token)
        key = self._local_key(kid)
        if key is None and self.jwks is not None:
            key = await anyio.to_thread.run_sync(self._remote_key, kid)
        if key is None:
            raise self._unknown_key(kid)
        return self._check(token, key)


def _staff(claims: dict[str, Any]) -> SignedInStaff:
    user, role, org, name = (claims.get(k) for k in ("sub", "role", "org", "name"))
    if not isinstance(user, str) or not user:
        raise InvalidToken("sign in again: your token doesn't name a user", "claims")
    if not isinstance(org, str) or not org:
        raise InvalidToken("sign in again: your token doesn't name your organisation", "claims")
    try:
        parsed_role = Role(str(role))
    except ValueError:
        raise InvalidToken(
            f"sign in again: your token names a role caseflow doesn't know ({role!r})", "role"
        ) from None
    if name is not None and not isinstance(name, str):
        raise InvalidToken(_DAMAGED, "claims")
    perms = claims.get("perms", [])
    if not isinstance(perms, list) or not all(isinstance(p, str) for p in perms):
        raise InvalidToken(_DAMAGED, "claims")
    return SignedInStaff(
        user=user, role=parsed_role, org=org, name=name, permissions=frozenset(perms)
    )
