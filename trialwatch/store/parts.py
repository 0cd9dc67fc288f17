"""Record versions as deduplicated parts: split a canonical record into compressed blobs, join them back."""

from __future__ import annotations

import json
import zlib
from typing import Any

from sqlalchemy import (
    select,
)
from sqlalchemy.orm import Session

from .. import record as rec
from ..errors import StoreError
from .models import Blob

# -- record versions as deduplicated parts ---------------------------------------------------
#
# A 1,148-site record is ~365 KB of canonical JSON (~57 KB compressed). Stored whole, a year of
# daily changes to one site's status costs ~20 MB for that trial alone. Split into parts, a new
# version stores only its changed parts: one chunk of sites and a small manifest.

_PART = "$part"
_MANIFEST = "$manifest"
_CHUNK_MASK = 0x0F  # content-defined chunk boundary on ~1 in 16 sites


def _site_key(site: Any) -> bytes:
    # Chunk boundaries depend on where a site is, not on its status, so a status change
    # rewrites only the chunk that holds it; an added site shifts no other boundary.
    if isinstance(site, dict):
        return "|".join(str(site.get(k, "")) for k in ("facility", "city", "country")).encode()
    return json.dumps(site, sort_keys=True).encode()


def _chunks(items: list) -> list[list]:
    import hashlib

    out: list[list] = [[]]
    for item in items:
        out[-1].append(item)
        if hashlib.sha256(_site_key(item)).digest()[0] & _CHUNK_MASK == 0:
            out.append([])
    return [c for c in out if c]


_KEYS: dict[str, bytes] = {}


def _key_json(key: str) -> bytes:
    """``"key":`` as canonical JSON writes it. The few section and module names are encoded
    once per process, not once per record (a bounded cache: record keys are outside text)."""
    out = _KEYS.get(key)
    if out is None:
        out = json.dumps(key, ensure_ascii=False).encode() + b":"
        if len(_KEYS) < 256:
            _KEYS[key] = out
    return out


def encode_parts(canon: dict) -> tuple[bytes, dict[tuple[str, str], bytes]]:
    """``rec.canonical_json(canon)`` and, on the way, the canonical JSON of each value that
    ``split_parts`` stores as a part (keyed ``("", key)`` at the top, ``("protocolSection", module)``
    below): the record is then dumped once, not once whole and again part by part."""
    def obj(items: dict[str, bytes]) -> bytes:
        # What json.dumps(sort_keys=True, separators=(",", ":")) writes for a dict of these values.
        return b"{" + b",".join([_key_json(k) + items[k] for k in sorted(items)]) + b"}"

    parts: dict[tuple[str, str], bytes] = {}
    top: dict[str, bytes] = {}
    for key, value in canon.items():
        if key == "protocolSection" and isinstance(value, dict):
            modules = {name: rec.canonical_json(module) for name, module in value.items()}
            parts.update((("protocolSection", name), b) for name, b in modules.items())
            top[key] = obj(modules)
        else:
            top[key] = parts["", key] = rec.canonical_json(value)
    return obj(top), parts


def split_parts(canon: dict, digest: str, *, raw_size: int, values: dict[str, Any] | None = None,
           encoded: dict[tuple[str, str], bytes] | None = None) -> dict[str, tuple[bytes, int]]:
    """{hash: (uncompressed body, raw size)} for a version's manifest (under ``digest``) and
    its parts; only the ones not stored yet get compressed, by ``put_blobs``. ``values``, when
    given, receives each part's value by hash (to rebuild an older version without reading
    the parts it shares with this one). ``encoded``: the parts' JSON from ``encode_parts``."""
    import hashlib

    blobs: dict[str, tuple[bytes, int]] = {}

    encoded = encoded or {}

    def part(value: Any, key: tuple[str, str] | None = None) -> dict:
        body = encoded.get(key) if key is not None else None
        if body is None:
            body = rec.canonical_json(value)
        h = hashlib.sha256(body).hexdigest()
        blobs.setdefault(h, (body, len(body)))
        if values is not None:
            values[h] = value
        return {_PART: h}

    manifest: dict[str, Any] = {}
    for key, value in canon.items():
        if key == "protocolSection" and isinstance(value, dict):
            modules: dict[str, Any] = {}
            for name, module in value.items():
                locs = module.get("locations") if isinstance(module, dict) else None
                if isinstance(locs, list) and len(locs) > 16:
                    rest = {k: v for k, v in module.items() if k != "locations"}
                    modules[name] = {**rest, "locations": {_PART + "s": [part(c)[_PART] for c in _chunks(locs)]}}
                else:
                    modules[name] = part(module, ("protocolSection", name))
            manifest[key] = modules
        else:
            manifest[key] = part(value, ("", key))
    body = rec.canonical_json({_MANIFEST: 1, "record": manifest})
    blobs[digest] = (body, raw_size)
    return blobs


def join_parts(stored: Any, load) -> dict:  # noqa: ANN001
    """The canonical record back from a manifest (or a whole-record blob)."""
    if not (isinstance(stored, dict) and stored.get(_MANIFEST) == 1):
        return stored

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {_PART}:
                return load(node[_PART])
            if set(node) == {_PART + "s"}:
                return [item for h in node[_PART + "s"] for item in load(h)]
            return {k: resolve(v) for k, v in node.items()}
        return node

    return resolve(stored["record"])


def part_loader(s: Session, to_read: set[str], known: dict[str, Any]):  # noqa: ANN202
    """A ``load(hash)`` for ``join_parts``: ``known`` values first, the rest read in one query (a
    version of a 1,000-site trial has ~100 parts)."""
    bodies = dict(s.execute(select(Blob.hash, Blob.body).where(Blob.hash.in_(list(to_read)))).all()) \
        if to_read else {}

    def load(h: str) -> Any:
        if h in known:
            return known[h]
        if h not in bodies:
            raise StoreError(f"stored record part {h[:12]} is missing; the database is damaged")
        return json.loads(zlib.decompress(bodies[h]))

    return load


def part_hashes(manifest: Any) -> list[str]:
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if set(node) == {_PART}:
                out.append(node[_PART])
            elif set(node) == {_PART + "s"}:
                out.extend(node[_PART + "s"])
            else:
                for v in node.values():
                    walk(v)

    if isinstance(manifest, dict) and manifest.get(_MANIFEST) == 1:
        walk(manifest["record"])
    return out


def read_blob(s: Session, digest: str) -> Any:
    blob = s.get(Blob, digest)
    if blob is None:
        raise StoreError(f"stored record part {digest[:12]} is missing; the database is damaged")
    return json.loads(zlib.decompress(blob.body))


def put_blobs(s: Session, blobs: dict[str, tuple[bytes, int]]) -> None:
    """Insert the blobs not yet stored. ON CONFLICT DO NOTHING: two writers storing different
    records that share a part must not collide on it."""
    if not blobs:
        return
    have = set(s.scalars(select(Blob.hash).where(Blob.hash.in_(list(blobs)))))
    rows = [{"hash": h, "body": zlib.compress(b, 9), "raw_size": n}
            for h, (b, n) in blobs.items() if h not in have]
    insert_blobs(s, rows)


def insert_blobs(s: Session, rows: list[dict]) -> None:
    if not rows:
        return
    dialect = s.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - other databases: plain insert, the read above narrows the race
        from sqlalchemy import insert
        s.execute(insert(Blob), rows)
        return
    s.execute(insert(Blob).on_conflict_do_nothing(index_elements=["hash"]), rows)
