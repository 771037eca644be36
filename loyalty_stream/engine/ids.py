"""Deterministic output ids: derived from what caused the output, never random, never the clock."""

from __future__ import annotations

from hashlib import blake2b
from typing import Final

_EMPTY: Final = blake2b(digest_size=10)
"""A hasher over nothing, never updated itself: copying it is cheaper than building one (keyword parsing)."""
# Its methods bound / unbound once: under mypyc `digest.update(...)` on a hashlib object looks `update` up by
# name on every call; a Final callable is a C global called directly.
_copy: Final = _EMPTY.copy
_copy_of: Final = type(_EMPTY).copy
_update: Final = type(_EMPTY).update
_hexdigest: Final = type(_EMPTY).hexdigest


def derive_id(prefix: str, *parts: object) -> str:
    """`prefix-` + 20 hex chars of a hash over the parts; the same inputs always give the same id.

    Parts are joined as text with a unit separator (None as the empty string). Most ids have only text parts,
    which `str.join` takes as they are (for the project's `StrEnum`s too: their text is their `str()`); other
    parts raise TypeError there and are converted one by one (callers pass text where they can: it is cheaper).
    """
    return derive_id_of(prefix, parts)


def derive_id_of(prefix: str, parts: tuple[object, ...]) -> str:
    """`derive_id(prefix, *parts)` for parts already in a tuple: what callers splatting a key use (under mypyc
    a call with `*key` is a generic Python call; a tuple argument keeps it a direct one)."""
    try:
        raw = "\x1f".join(parts)  # type: ignore[arg-type]  # not all text: TypeError, handled below
    except TypeError:
        raw = "\x1f".join([p if p.__class__ is str else ("" if p is None else str(p)) for p in parts])
    digest = _copy()
    _update(digest, raw.encode())
    return f"{prefix}-{_hexdigest(digest)}"  # (one string built, where `+` built two)


def joined(parts: tuple[object, ...]) -> str:
    """The text `derive_id_of` hashes for `parts`: for ids built from pieces joined once (`id_of_text`)."""
    try:
        return "\x1f".join(parts)  # type: ignore[arg-type]  # not all text: TypeError, handled below
    except TypeError:
        return "\x1f".join([p if p.__class__ is str else ("" if p is None else str(p)) for p in parts])


def id_of_text(head: str, raw: str) -> str:
    """`head` (the prefix and its dash) + the hash of `raw`: `derive_id_of(prefix, parts)` is
    `id_of_text(prefix + "-", joined(parts))`. For ids whose text shares pieces with another's (`Effects.credit`
    joins a key once for two ids)."""
    digest = _copy()
    _update(digest, raw.encode())
    return head + _hexdigest(digest)


def hasher_of(raw: str) -> blake2b:
    """A hasher over `raw` (never updated itself), for ids whose text starts with `raw` (`id_after`)."""
    digest: blake2b = _copy()
    _update(digest, raw.encode())
    return digest


def id_after(head: str, hasher: blake2b, tail: bytes) -> str:
    """`id_of_text(head, raw + tail.decode())` for `hasher = hasher_of(raw)`: the hash streams, so hashing `raw`
    then `tail` is hashing their concatenation, and ids sharing `raw` need neither the joined text built nor
    `raw` encoded again (`Effects.credit`: an activity's entries share their cause, kind and version)."""
    digest = _copy_of(hasher)
    _update(digest, tail)
    return head + _hexdigest(digest)
