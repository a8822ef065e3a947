"""Signed checkpoints (pure): the leaf list, the chained digest, the Ed25519 signature.

A checkpoint covers the global positions ``after_position < p <= upto_position``; every
position in that range is final when it is written (no transaction can still commit an
event there: see ``shared.application.audit.writer``). Its **leaves** are ``(position, event
id, case id, event hash)`` of every event in the range, in position order; positions left unused by
rolled-back transactions are simply absent. The leaf list is stored with the checkpoint
(about 64 bytes an event), so a verifier can name the exact event that differs even when
an attacker recomputed the event's hash and its successors' links, and an auditor holding
only some cases can prove each of them complete (every signed leaf of the case is there).

The **digest** is SHA-256 over a domain tag, the sequence number, the range bounds, the
count, the previous checkpoint's digest (so checkpoints form a chain) and the SHA-256 of
the encoded leaf list; the signature is Ed25519 over the 32 digest bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from collections.abc import Mapping, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared.adapters.auth import key_id

DOMAIN = b"caseflow audit checkpoint v1\n"
LEAF_SIZE = 64
"""Bytes of one leaf record after the positions: event id, case id (16 each), hash (32)."""
_MAGIC = b"CFL1"
_HEADER = struct.Struct(">4sII")  # magic, leaf count, run count
_RUN = struct.Struct(">qI")  # first position, length
_BOUNDS = struct.Struct(">QqqQ")  # seq, after, upto, count
_NO_DIGEST = bytes(32)


class LeafFormatError(ValueError):
    """A stored leaf list can't be decoded."""


def leaf_record(event_id: str, case_id: str, event_hash: str) -> bytes:
    """The 64-byte record of one leaf, from the row's text forms."""
    return bytes.fromhex(event_id.replace("-", "") + case_id.replace("-", "") + event_hash)


@dataclasses.dataclass(frozen=True, slots=True)
class Leaves:
    """A decoded leaf list: positions ascending, and one 64-byte record per position."""

    positions: Sequence[int]
    records: bytes

    def __len__(self) -> int:
        return len(self.positions)

    def record(self, index: int) -> bytes:
        return self.records[index * LEAF_SIZE : (index + 1) * LEAF_SIZE]

    def describe(self, index: int) -> tuple[int, str, str, str]:
        """``(position, event id, case id, hash)`` of leaf ``index``, as text."""
        rec = self.record(index)
        return self.positions[index], _uuid_text(rec[:16]), _uuid_text(rec[16:32]), rec[32:].hex()


def _uuid_text(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def encode_leaves(positions: Sequence[int], records: Sequence[bytes]) -> bytes:
    """The stored form: positions as runs of consecutive numbers, then the records."""
    if len(positions) != len(records):
        raise ValueError("one record per position")
    runs: list[tuple[int, int]] = []
    previous = None
    for position in positions:
        if previous is not None and position <= previous:
            raise ValueError("leaf positions must ascend")
        if runs and position == previous + 1:  # type: ignore[operator]
            start, length = runs[-1]
            runs[-1] = (start, length + 1)
        else:
            runs.append((position, 1))
        previous = position
    parts = [_HEADER.pack(_MAGIC, len(positions), len(runs))]
    parts.extend(_RUN.pack(start, length) for start, length in runs)
    parts.extend(records)
    return b"".join(parts)


def decode_leaves(blob: bytes) -> Leaves:
    """Inverse of :func:`encode_leaves`; raises :class:`LeafFormatError` if damaged."""
    try:
        magic, count, nruns = _HEADER.unpack_from(blob, 0)
        if magic != _MAGIC:
            raise LeafFormatError("not a caseflow leaf list")
        offset = _HEADER.size
        positions: list[int] = []
        for start, length in _RUN.iter_unpack(blob[offset : offset + nruns * _RUN.size]):
            positions.extend(range(start, start + length))
        offset += nruns * _RUN.size
    except struct.error as err:
        raise LeafFormatError(f"truncated leaf list: {err}") from None
    records = bytes(blob[offset:])
    if len(positions) != count or len(records) != count * LEAF_SIZE:
        raise LeafFormatError(f"leaf list says {count} leaves but holds a different number")
    return Leaves(positions, records)


def checkpoint_digest(
    seq: int,
    after_position: int,
    upto_position: int,
    event_count: int,
    leaves: bytes,
    prev_digest: str | None,
) -> str:
    """The hex digest a checkpoint signs (see the module docstring)."""
    h = hashlib.sha256(DOMAIN)
    h.update(_BOUNDS.pack(seq, after_position, upto_position, event_count))
    h.update(bytes.fromhex(prev_digest) if prev_digest else _NO_DIGEST)
    h.update(hashlib.sha256(leaves).digest())
    return h.hexdigest()


@dataclasses.dataclass(frozen=True, slots=True)
class Checkpoint:
    """One signed checkpoint, as stored (and as exported)."""

    seq: int
    after_position: int
    upto_position: int
    event_count: int
    leaves: bytes
    prev_digest: str | None
    digest: str
    key_id: str
    signature: str
    created_at: str
    """When it was written, canonical UTC text (not signed: informative only)."""

    def expected_digest(self) -> str:
        return checkpoint_digest(
            self.seq,
            self.after_position,
            self.upto_position,
            self.event_count,
            self.leaves,
            self.prev_digest,
        )


def sign_checkpoint(
    key: Ed25519PrivateKey,
    *,
    seq: int,
    after_position: int,
    upto_position: int,
    positions: Sequence[int],
    records: Sequence[bytes],
    prev_digest: str | None,
    created_at: str,
) -> Checkpoint:
    """A new checkpoint over these leaves, signed with ``key``."""
    if positions and not after_position < positions[0] <= positions[-1] <= upto_position:
        raise ValueError("leaves outside the checkpoint's range")
    leaves = encode_leaves(positions, records)
    digest = checkpoint_digest(
        seq, after_position, upto_position, len(positions), leaves, prev_digest
    )
    signature = key.sign(bytes.fromhex(digest)).hex()
    return Checkpoint(
        seq=seq,
        after_position=after_position,
        upto_position=upto_position,
        event_count=len(positions),
        leaves=leaves,
        prev_digest=prev_digest,
        digest=digest,
        key_id=key_id(key.public_key()),
        signature=signature,
        created_at=created_at,
    )


def signature_valid(checkpoint: Checkpoint, keys: Mapping[str, Ed25519PublicKey]) -> bool:
    """Whether the checkpoint's signature over its stored digest is by one of ``keys``."""
    key = keys.get(checkpoint.key_id)
    if key is None:
        return False
    try:
        key.verify(bytes.fromhex(checkpoint.signature), bytes.fromhex(checkpoint.digest))
    except (InvalidSignature, ValueError):
        return False
    return True
