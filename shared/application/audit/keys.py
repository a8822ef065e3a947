"""The audit's own Ed25519 key pair (not the staff token key): checkpoints are signed with
it, and auditors verify with its public key alone.

Settings name the private key file; its public key sits beside it as ``<name>.pub.pem``.
The embedded default keeps both under ``var/keys`` and ``caseflow up`` creates them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared.adapters.auth import KeyPair, ensure_key_pair, key_id, load_public_keys

DEFAULT_AUDIT_KEY_FILE = Path("var/keys/audit-ed25519.pem")


class AuditKeyError(RuntimeError):
    """The audit key can't be used; ``str()`` says why and what to do."""


def key_pair(private_file: Path) -> KeyPair:
    """Where the pair whose private key is ``private_file`` lives."""
    public_name = private_file.name.removesuffix(".pem") + ".pub.pem"
    return KeyPair(private_file.parent, private_file.name, public_name)


def ensure_audit_key(private_file: Path = DEFAULT_AUDIT_KEY_FILE) -> tuple[KeyPair, bool]:
    """Create the audit key pair unless it exists; ``(pair, created)``."""
    pair = key_pair(private_file)
    return ensure_key_pair(
        pair.directory, private_name=pair.private_name, public_name=pair.public_name
    )


def load_signing_key(private_file: Path) -> Ed25519PrivateKey:
    """The audit's private key, or :class:`AuditKeyError` naming the problem."""
    try:
        data = private_file.read_bytes()
    except FileNotFoundError:
        raise AuditKeyError(
            f"no audit signing key at {private_file}: create one with "
            f"'caseflow audit init-key --key-file {private_file}'"
        ) from None
    except OSError as err:
        raise AuditKeyError(f"can't read the audit signing key {private_file}: {err}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as err:
        raise AuditKeyError(f"{private_file} is not a PEM private key: {err}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditKeyError(f"{private_file} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def public_pem(key: Ed25519PublicKey) -> str:
    """The public key in PEM (SubjectPublicKeyInfo)."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def keys_by_id(keys: Iterable[Ed25519PublicKey]) -> dict[str, Ed25519PublicKey]:
    """Public keys by their RFC 7638 thumbprint (the ``key_id`` checkpoints record)."""
    return {key_id(k): k for k in keys}


def read_public_keys(path: Path) -> dict[str, Ed25519PublicKey]:
    """The public keys in a PEM file, by id; :class:`AuditKeyError` if unusable."""
    try:
        return keys_by_id(load_public_keys(path))
    except FileNotFoundError:
        raise AuditKeyError(f"no public key file at {path}") from None
    except (OSError, ValueError) as err:
        raise AuditKeyError(str(err)) from None


def parse_public_keys(pem: str) -> dict[str, Ed25519PublicKey]:
    """The Ed25519 public keys in PEM text, by id (for a bundle's manifest)."""
    key = serialization.load_pem_public_key(pem.encode("ascii"))
    if not isinstance(key, Ed25519PublicKey):
        raise AuditKeyError(f"the public key is a {type(key).__name__}, not Ed25519")
    return keys_by_id([key])
