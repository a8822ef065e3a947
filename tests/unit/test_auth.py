"""Staff tokens: issuing, verifying, refusing, and the ``caseflow keys`` / ``token`` commands."""

from __future__ import annotations

import base64
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from typer.testing import CliRunner

from services.intake.settings import IntakeSettings
from shared.adapters.auth import (
    AuthConfigError,
    InvalidToken,
    KeyPair,
    Role,
    SignedInStaff,
    SigningKey,
    TokenVerifier,
    ensure_key_pair,
    issue_token,
    key_id,
    load_public_keys,
    parse_ttl,
)
from shared.cli.main import app

CLERK = SignedInStaff(user="li.ming", role=Role.window_clerk, org="xuefeng_station", name="李明")


@pytest.fixture
def keys(tmp_path: Path) -> SigningKey:
    ensure_key_pair(tmp_path / "keys")
    return SigningKey.load(tmp_path / "keys")


@pytest.fixture
def verifier(keys: SigningKey) -> TokenVerifier:
    return TokenVerifier([keys.private_key.public_key()])


def refusal(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(InvalidToken) as caught:
        verifier.verify(token)
    return str(caught.value)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_issued_token_verifies_to_the_same_staff(keys: SigningKey, verifier: TokenVerifier) -> None:
    token = issue_token(CLERK, keys)
    assert verifier.verify(token) == CLERK
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA"
    assert header["kid"] == keys.kid
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == claims["aud"] == "caseflow"
    assert claims["exp"] - claims["iat"] == 12 * 3600


def test_name_is_optional(keys: SigningKey, verifier: TokenVerifier) -> None:
    staff = SignedInStaff(user="auditor1", role=Role.auditor, org="hc_civil_affairs")
    assert verifier.verify(issue_token(staff, keys)) == staff


def test_expired_token_is_refused_with_a_plain_message(
    keys: SigningKey, verifier: TokenVerifier
) -> None:
    issued = datetime.now(UTC) - timedelta(hours=2)
    token = issue_token(CLERK, keys, ttl=timedelta(hours=1), now=issued)
    assert refusal(verifier, token) == "sign in again: your token expired"


def test_a_little_clock_skew_is_tolerated(keys: SigningKey, verifier: TokenVerifier) -> None:
    just_expired = datetime.now(UTC) - timedelta(minutes=10, seconds=10)
    assert verifier.verify(issue_token(CLERK, keys, ttl=timedelta(minutes=10), now=just_expired))
    from_the_future = datetime.now(UTC) + timedelta(seconds=10)
    assert verifier.verify(issue_token(CLERK, keys, now=from_the_future))
    far_future = datetime.now(UTC) + timedelta(minutes=5)
    assert "not valid yet" in refusal(verifier, issue_token(CLERK, keys, now=far_future))


def test_wrong_audience_is_refused(keys: SigningKey, verifier: TokenVerifier) -> None:
    token = issue_token(CLERK, keys, audience="payroll")
    assert (
        refusal(verifier, token) == "sign in again: your token is for another system, not caseflow"
    )


def test_wrong_issuer_is_refused(keys: SigningKey, verifier: TokenVerifier) -> None:
    assert "issuer" in refusal(verifier, issue_token(CLERK, keys, issuer="someone-else"))


def test_configured_issuer_and_audience_are_used(keys: SigningKey) -> None:
    verifier = TokenVerifier([keys.private_key.public_key()], issuer="idp", audience="cf-prod")
    assert verifier.verify(issue_token(CLERK, keys, issuer="idp", audience="cf-prod")) == CLERK
    assert "another system" in refusal(verifier, issue_token(CLERK, keys, issuer="idp"))


def test_tampered_signature_is_refused(keys: SigningKey, verifier: TokenVerifier) -> None:
    head, body, signature = issue_token(CLERK, keys).split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[0] ^= 0x01
    forged = f"{head}.{body}.{_b64(bytes(raw))}"
    assert "isn't genuine" in refusal(verifier, forged)


def test_promoting_oneself_breaks_the_signature(keys: SigningKey, verifier: TokenVerifier) -> None:
    head, body, signature = issue_token(CLERK, keys).split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["role"] = "station_head"
    forged = f"{head}.{_b64(json.dumps(claims).encode())}.{signature}"
    assert "isn't genuine" in refusal(verifier, forged)


def test_token_from_an_unknown_key_is_refused(tmp_path: Path, verifier: TokenVerifier) -> None:
    ensure_key_pair(tmp_path / "other")
    stranger = SigningKey.load(tmp_path / "other")
    message = refusal(verifier, issue_token(CLERK, stranger))
    assert message.startswith("sign in again: your token was signed with a key caseflow doesn't")


def test_other_key_with_a_borrowed_kid_is_still_refused(
    tmp_path: Path, keys: SigningKey, verifier: TokenVerifier
) -> None:
    ensure_key_pair(tmp_path / "other")
    impostor = SigningKey(SigningKey.load(tmp_path / "other").private_key, kid=keys.kid)
    assert "isn't genuine" in refusal(verifier, issue_token(CLERK, impostor))


def test_unsigned_and_hmac_tokens_are_refused(keys: SigningKey, verifier: TokenVerifier) -> None:
    claims: dict[str, Any] = {"sub": "x", "role": "auditor", "org": "hc_hrss"}
    claims |= {"iss": "caseflow", "aud": "caseflow"}
    claims |= {"iat": int(datetime.now(UTC).timestamp()), "exp": 2_000_000_000}
    none = jwt.encode(claims, "", algorithm="none", headers={"kid": keys.kid})
    assert "isn't genuine" in refusal(verifier, none)
    hmac = jwt.encode(claims, "a-shared-secret-of-enough-length!", headers={"kid": keys.kid})
    assert "isn't genuine" in refusal(verifier, hmac)


def test_garbage_and_missing_claims_are_refused(keys: SigningKey, verifier: TokenVerifier) -> None:
    assert refusal(verifier, "not-a-token") == "sign in again: your token is damaged or incomplete"
    now = int(datetime.now(UTC).timestamp())
    base = {"sub": "x", "org": "hc_hrss", "iss": "caseflow", "aud": "caseflow", "iat": now}
    no_exp = jwt.encode(base, keys.private_key, algorithm="EdDSA", headers={"kid": keys.kid})
    assert refusal(verifier, no_exp) == "sign in again: your token lacks the 'exp' claim"
    odd_role = jwt.encode(
        base | {"exp": now + 60, "role": "mayor"},
        keys.private_key,
        algorithm="EdDSA",
        headers={"kid": keys.kid},
    )
    assert "role caseflow doesn't know ('mayor')" in refusal(verifier, odd_role)
    no_kid = jwt.encode(base | {"exp": now + 60, "role": "auditor"}, keys.private_key, "EdDSA")
    assert "which key" in refusal(verifier, no_kid)


def test_kid_is_the_rfc_7638_thumbprint() -> None:
    # RFC 8037 appendix A.2/A.3: this Ed25519 public key has this JWK thumbprint.
    x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    public = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(x + "="))
    assert key_id(public) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_key_file_may_hold_several_keys_for_rotation(tmp_path: Path) -> None:
    old, _ = ensure_key_pair(tmp_path / "old")
    new, _ = ensure_key_pair(tmp_path / "new")
    both = tmp_path / "both.pem"
    both.write_bytes(old.public_path.read_bytes() + new.public_path.read_bytes())
    verifier = TokenVerifier(load_public_keys(both))
    for pair in (old, new):
        assert verifier.verify(issue_token(CLERK, SigningKey.load(pair.directory))) == CLERK


def test_key_pair_is_created_once_and_private_key_is_owner_only(tmp_path: Path) -> None:
    pair, created = ensure_key_pair(tmp_path / "k")
    assert created
    assert stat.S_IMODE(pair.private_path.stat().st_mode) == 0o600
    before = pair.private_path.read_bytes()
    again, created = ensure_key_pair(tmp_path / "k")
    assert not created and again.private_path.read_bytes() == before


def test_half_a_key_pair_is_not_overwritten(tmp_path: Path) -> None:
    pair, _ = ensure_key_pair(tmp_path / "k")
    pair.private_path.unlink()
    with pytest.raises(FileExistsError, match="half a key pair"):
        ensure_key_pair(tmp_path / "k")


def test_verifier_from_settings_names_the_settings_when_no_key(tmp_path: Path) -> None:
    settings = IntakeSettings(jwt_public_key_file=tmp_path / "missing.pem")
    with pytest.raises(AuthConfigError) as caught:
        TokenVerifier.from_settings(settings)
    assert "CASEFLOW_INTAKE_JWT_PUBLIC_KEY_FILE" in str(caught.value)
    assert "CASEFLOW_INTAKE_JWKS_URL" in str(caught.value)
    assert "caseflow keys init" in str(caught.value)


def test_verifier_from_settings_refuses_a_key_file_that_is_not_a_key(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("hello")
    with pytest.raises(AuthConfigError, match="CASEFLOW_INTAKE_JWT_PUBLIC_KEY_FILE"):
        TokenVerifier.from_settings(IntakeSettings(jwt_public_key_file=junk))


def test_verifier_from_settings_uses_key_file_issuer_and_audience(tmp_path: Path) -> None:
    pair, _ = ensure_key_pair(tmp_path / "k")
    settings = IntakeSettings(jwt_public_key_file=pair.public_path, jwt_audience="cf-test")
    verifier = TokenVerifier.from_settings(settings)
    key = SigningKey.load(pair.directory)
    assert verifier.verify(issue_token(CLERK, key, audience="cf-test")) == CLERK
    assert "another system" in refusal(verifier, issue_token(CLERK, key))


def test_verifier_from_settings_accepts_a_jwks_url_alone(tmp_path: Path) -> None:
    settings = IntakeSettings(
        jwt_public_key_file=tmp_path / "missing.pem", jwks_url="https://idp.example/jwks.json"
    )
    verifier = TokenVerifier.from_settings(settings)
    assert verifier.jwks is not None and not verifier.keys


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12h", timedelta(hours=12)),
        ("30m", timedelta(minutes=30)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("7d", timedelta(days=7)),
        ("90s", timedelta(seconds=90)),
    ],
)
def test_ttl_parsing(text: str, expected: timedelta) -> None:
    assert parse_ttl(text) == expected


@pytest.mark.parametrize("text", ["", "12", "h", "12x", "0h", "-1h", "1h 30m"])
def test_bad_ttl_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_ttl(text)


# --- the commands ------------------------------------------------------------------------

runner = CliRunner()


def test_keys_init_token_and_jwks_work_together(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    result = runner.invoke(app, ["keys", "init", "--dir", str(key_dir)])
    assert result.exit_code == 0, result.output
    assert "created" in result.output and KeyPair(key_dir).exists()
    again = runner.invoke(app, ["keys", "init", "--dir", str(key_dir)])
    assert again.exit_code == 0 and "already there" in again.output

    args = ["token", "--user", "wang", "--role", "reviewer", "--org", "longmen_station"]
    result = runner.invoke(app, [*args, "--name", "王芳", "--ttl", "2h", "--key-dir", str(key_dir)])
    assert result.exit_code == 0, result.output
    token = result.output.strip()

    jwks_out = runner.invoke(app, ["keys", "jwks", "--dir", str(key_dir)])
    assert jwks_out.exit_code == 0, jwks_out.output
    (jwk,) = json.loads(jwks_out.output)["keys"]
    assert jwk["kid"] == jwt.get_unverified_header(token)["kid"]
    verifier = TokenVerifier([jwt.PyJWK(jwk).key])
    assert verifier.verify(token) == SignedInStaff("wang", Role.reviewer, "longmen_station", "王芳")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 2 * 3600


@pytest.mark.parametrize(
    ("role", "org"),
    [
        ("window_clerk", "hc_hrss"),
        ("reviewer", "banqiao_town"),
        ("station_head", "hc_forestry"),
        ("department_officer", "xuefeng_station"),
        ("auditor", "banqiao_town"),
        ("auditor", "longmen_station"),
    ],
)
def test_token_refuses_a_role_that_does_not_fit_the_org(
    tmp_path: Path, role: str, org: str
) -> None:
    ensure_key_pair(tmp_path)
    args = ["token", "--user", "u", "--role", role, "--org", org, "--key-dir", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "--role" in result.output and org in result.output
    assert "eyJ" not in result.output  # no token printed


@pytest.mark.parametrize(
    ("role", "org"),
    [
        ("window_clerk", "xuefeng_station"),
        ("station_head", "longmen_station"),
        ("department_officer", "hc_civil_affairs"),
        ("department_officer", "banqiao_town"),
        ("auditor", "hc_audit"),
    ],
)
def test_token_accepts_roles_that_fit(tmp_path: Path, role: str, org: str) -> None:
    ensure_key_pair(tmp_path)
    args = ["token", "--user", "u", "--role", role, "--org", org, "--key-dir", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("eyJ")


def test_token_refuses_unknown_org_and_role_and_a_missing_key(tmp_path: Path) -> None:
    ensure_key_pair(tmp_path / "k")
    base = ["token", "--user", "u", "--key-dir", str(tmp_path / "k")]
    unknown_org = runner.invoke(app, [*base, "--role", "reviewer", "--org", "atlantis"])
    assert unknown_org.exit_code == 2 and "atlantis" in unknown_org.output
    unknown_role = runner.invoke(app, [*base, "--role", "mayor", "--org", "xuefeng_station"])
    assert unknown_role.exit_code == 2 and "mayor" in unknown_role.output
    args = ["token", "--user", "u", "--role", "reviewer", "--org", "xuefeng_station"]
    no_key = runner.invoke(app, [*args, "--key-dir", str(tmp_path / "none")])
    # Rich wraps the error box to the terminal's width: compare the words, not the layout.
    words = " ".join(no_key.output.replace("│", " ").split())
    assert no_key.exit_code == 2 and "caseflow keys init" in words


def test_caseflow_up_makes_the_key_and_points_the_services_at_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.cli.supervisor import Stack

    for service in ("INTAKE", "PROCESSING", "NOTIFY"):
        monkeypatch.delenv(f"CASEFLOW_{service}_JWT_PUBLIC_KEY_FILE", raising=False)
    ports = {"intake": 1, "processing": 2, "notify": 3}
    stack = Stack(
        data_dir=tmp_path / "var",
        database_url=None,
        nats_url=None,
        host="127.0.0.1",
        ports=ports,
        nats_port=4,
    )
    stack.ensure_keys()
    stack.ensure_keys()  # a second `caseflow up` keeps the key: tokens stay valid
    stack.ensure_nats_credentials()  # and the NATS users' seeds, readable by the owner only
    public = tmp_path / "var" / "keys" / "jwt-ed25519.pub.pem"
    for service in ports:
        env = stack.service_env(service, "nats://127.0.0.1:4")
        assert env[f"CASEFLOW_{service.upper()}_JWT_PUBLIC_KEY_FILE"] == str(public)
        seed = tmp_path / "var" / "nats" / f"{service}.nk"
        assert env[f"CASEFLOW_{service.upper()}_NATS_SEED_FILE"] == str(seed)
        assert seed.stat().st_mode & 0o777 == 0o600
        relay = env[f"CASEFLOW_{service.upper()}_NATS_RELAY_SEED_FILE"]
        assert relay == str(tmp_path / "var" / "nats" / "relay.nk")
    assert (tmp_path / "var" / "nats" / "nats-server.conf").read_text().count("nkey:") == 5

    args = ["token", "--user", "u", "--role", "reviewer", "--org", "xuefeng_station"]
    token = runner.invoke(app, [*args, "--key-dir", str(public.parent)]).output.strip()
    monkeypatch.setattr("os.environ", stack.service_env("intake", "nats://127.0.0.1:4"))
    settings = IntakeSettings()  # as `caseflow serve intake` reads it
    assert settings.jwt_public_key_file == public
    verifier = TokenVerifier.from_settings(settings)
    assert verifier.verify(token) == SignedInStaff("u", Role.reviewer, "xuefeng_station")


def test_caseflow_up_leaves_an_operators_key_setting_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.cli.supervisor import Stack

    monkeypatch.setenv("CASEFLOW_INTAKE_JWT_PUBLIC_KEY_FILE", "/etc/caseflow/jwt.pub.pem")
    stack = Stack(
        data_dir=tmp_path,
        database_url=None,
        nats_url=None,
        host="127.0.0.1",
        ports={"intake": 1},
        nats_port=4,
    )
    stack.ensure_keys()
    env = stack.service_env("intake", "nats://127.0.0.1:4")
    assert env["CASEFLOW_INTAKE_JWT_PUBLIC_KEY_FILE"] == "/etc/caseflow/jwt.pub.pem"


def test_special_permissions_travel_in_the_token(tmp_path: Path) -> None:
    ensure_key_pair(tmp_path)
    args = ["token", "--user", "zhao", "--role", "station_head", "--org", "xuefeng_station"]
    result = runner.invoke(app, [*args, "--key-dir", str(tmp_path), "--permission", "reopen"])
    assert result.exit_code == 0, result.output
    verifier = TokenVerifier(load_public_keys(KeyPair(tmp_path).public_path))
    assert verifier.verify(result.output.strip()).permissions == frozenset({"reopen"})
    plain = runner.invoke(app, [*args, "--key-dir", str(tmp_path)])
    assert verifier.verify(plain.output.strip()).permissions == frozenset()


@pytest.mark.parametrize(
    ("role", "permission", "says"),
    [
        ("reviewer", "reopen", "only a station head may hold"),
        ("station_head", "superuser", "doesn't grant"),
    ],
)
def test_token_refuses_a_permission_the_registry_does_not_grant(
    tmp_path: Path, role: str, permission: str, says: str
) -> None:
    ensure_key_pair(tmp_path)
    args = ["token", "--user", "u", "--role", role, "--org", "xuefeng_station"]
    result = runner.invoke(app, [*args, "--key-dir", str(tmp_path), "--permission", permission])
    assert result.exit_code == 2
    words = " ".join(result.output.replace("│", " ").split())
    assert "--permission" in words and says in words
    assert "eyJ" not in result.output


def test_claims_are_checked_against_the_registry() -> None:
    from shared.adapters.auth import ClaimsRefused, check_claims
    from shared.domain.orgs import load_organisations

    orgs = load_organisations()
    check_claims(SignedInStaff("a", Role.auditor, "hc_audit"), orgs)
    check_claims(
        SignedInStaff("h", Role.station_head, "xuefeng_station", permissions=frozenset({"reopen"})),
        orgs,
    )
    cases = [
        (SignedInStaff("a", Role.auditor, "nowhere"), 401, "unknown org"),
        (SignedInStaff("a", Role.auditor, "hc_justice"), 403, "role does not fit org"),
        (SignedInStaff("c", Role.window_clerk, "hc_hrss"), 403, "role does not fit org"),
        (
            SignedInStaff("o", Role.department_officer, "longmen_station"),
            403,
            "role does not fit org",
        ),
        (
            SignedInStaff(
                "c", Role.window_clerk, "xuefeng_station", permissions=frozenset({"reopen"})
            ),
            403,
            "permission not granted",
        ),
        (
            SignedInStaff(
                "h", Role.station_head, "xuefeng_station", permissions=frozenset({"root"})
            ),
            403,
            "unknown permission",
        ),
    ]
    for staff, status, reason in cases:
        with pytest.raises(ClaimsRefused) as refused:
            check_claims(staff, orgs)
        assert (refused.value.status, refused.value.reason) == (status, reason), staff
