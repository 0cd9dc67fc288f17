"""What storing one record needs besides the tables: the columns taken from it (checked), the pre-lock work, the result, and the seam diff."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from .. import record as rec
from ..diff import Change, diff
from ..errors import StoreError
from .models import ChangeRow, TrialAlias


def seam_diff(old: dict, new: dict, *, ignore: Sequence[str] = ()) -> list[Change]:
    """``diff`` across the seam between a registry version (legacy HTML-like text, only
    ``protocolSection`` and ``hasResults``) and a live record (Markdown, every section): only
    the sections both carry, and text compared by its words (``markup.plain``)."""
    from ..markup import plain_record

    common = set(old) & set(new)
    o = plain_record({k: v for k, v in old.items() if k in common})
    n = plain_record({k: v for k, v in new.items() if k in common})
    return diff(o, n, ignore=tuple(ignore))


def day_start(date: str) -> dt.datetime:
    """A registry date (``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD``) as naive UTC midnight."""
    parts = [int(x) for x in date[:10].split("-")] + [1, 1]
    return dt.datetime(parts[0], parts[1], parts[2])


def remember_alias(s: Session, alias: str, nct_id: str) -> None:
    row = s.get(TrialAlias, alias)
    if row is None:
        s.add(TrialAlias(alias=alias, nct_id=nct_id))
    else:
        row.nct_id = nct_id


def nct_or_unknown(record: Any) -> str:
    try:
        return rec.nct_of(record)
    except Exception:  # noqa: BLE001 - only for the message
        return "(a record without a readable NCT number)"


def error_reason(e: BaseException) -> str:
    """An error in one line: the driver's message for a database error, without the SQL."""
    orig = getattr(e, "orig", None)
    text = str(orig if orig is not None else (getattr(e, "message", None) or e))
    text = " ".join(text.split())
    return f"{type(orig or e).__name__}: {text[:300]}"


def json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)


def problems_text(problems: Sequence[str]) -> str | None:
    """``trials.problems``: the latest record's malformed fields as a JSON list, NULL when none."""
    return json.dumps(list(problems), ensure_ascii=False) if problems else None



@dataclass
class Prepared:
    """A fetched record made ready to store, outside any transaction. The columns taken from
    it are checked here: record text is untrusted, and one malformed field must neither reach
    the database (a type or size it refuses would fail the whole transaction) nor go unsaid."""

    nct_id: str
    canon: dict
    body: bytes
    digest: str
    status: str | None
    title: str | None
    last_update_posted: str | None
    problems: list[str] = field(default_factory=list)  # what was wrong, said once per fetch
    # The canonical JSON of each part (store/parts.encode_parts), so _split dumps nothing twice.
    encoded: dict[tuple[str, str], bytes] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, record: dict) -> "Prepared":
        import hashlib

        if not rec.is_study(record):
            raise StoreError("refusing to store a body that is not a study record")
        from .parts import encode_parts

        # A view, not a copy: what the canonical form leaves alone stays the record's own
        # objects (nothing here or in the diff changes either; a diff with ``ignore`` prunes
        # its own copies). Copying every record cost a first poll of 10,000 trials ~0.5 s.
        canon = rec.canonical_view(record)
        body, encoded = encode_parts(canon)
        problems: list[str] = []
        return cls(nct_id=rec.nct_of(record), canon=canon, body=body, encoded=encoded,
                   digest=hashlib.sha256(body).hexdigest(),
                   status=_status_column(rec.get(canon, "protocolSection.statusModule.overallStatus"), problems),
                   title=_title_column(rec.get(canon, "protocolSection.identificationModule.briefTitle"), problems),
                   last_update_posted=_date_column(
                       rec.get(record, "protocolSection.statusModule.lastUpdatePostDateStruct.date"), problems),
                   problems=problems)


# Column sizes of the values taken from a record (trials.overall_status, snapshots.*).
_STATUS_MAX = 32
_TITLE_MAX = 1000  # the registry caps brief titles at 300 characters
FIELD_MAX = 200   # changes.field


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=True, default=str)
    return repr(text[:40] + "…") if len(text) > 40 else repr(text)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", bool: "a boolean", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)


def _status_column(value: Any, problems: list[str]) -> str | None:
    """An enum as the API spells them (RECRUITING, ...): upper case and underscores, short.
    Anything else is stored as unknown (the full record still keeps what was sent)."""
    import re

    if value is None:
        return None
    if isinstance(value, str) and len(value) <= _STATUS_MAX and re.fullmatch(r"[A-Z][A-Z0-9_]*", value):
        return value
    what = f"{_kind(value)}" if not isinstance(value, str) else f"{_shown(value)}"
    problems.append(f"overallStatus is {what}, not a status; stored as unknown")
    return None


def _title_column(value: Any, problems: list[str]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        problems.append(f"briefTitle is {_kind(value)}, not text; stored without a title")
        return None
    value = nul_free(value)
    if len(value) > _TITLE_MAX:
        problems.append(f"briefTitle is {len(value)} characters long; stored cut to {_TITLE_MAX}")
        value = value[:_TITLE_MAX]
    return value


def _date_column(value: Any, problems: list[str]) -> str | None:
    """``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD``; an ISO date-time is read as its date (leniently:
    ``2026-11-30T00:00:00.000Z`` is 2026-11-30). Anything else is stored as unknown."""
    import re

    if value is None:
        return None
    if isinstance(value, str):
        m = re.match(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?(?:$|[T ])", value.strip())
        if m:
            y, mo, d = m.groups()
            try:
                dt.date(int(y), int(mo or 1), int(d or 1))
                return "-".join(x for x in (y, mo, d) if x)
            except ValueError:
                pass
    problems.append(f"lastUpdatePostDate is {_shown(value) if isinstance(value, str) else _kind(value)}, "
                    "not a date; stored as unknown")
    return None


def nul_free(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL; SQLite would, but both should store the same."""
    return value.replace("\x00", "") if value and "\x00" in value else value


@dataclass
class Work:
    """What ``_prework`` computed for one changed record, against snapshot ``latest_id``."""

    latest_id: int | None
    blob_rows: list[dict]
    changes: list[Change]


@dataclass
class Recorded:
    """What ``record_fetch`` did."""

    nct_id: str
    snapshot_id: int | None
    first: bool
    stored: bool
    changes: list[ChangeRow] = field(default_factory=list)
    # When the latest earlier snapshot was taken (for an unchanged record: since when it is so).
    previous_fetched_at: dt.datetime | None = None
    previous_checked_at: dt.datetime | None = None
    raced: bool = False
    # Fields of the record that were malformed and stored as unknown (the record was stored).
    problems: list[str] = field(default_factory=list)
    # Why the record could NOT be stored (nothing of it was written); None when it was.
    error: str | None = None
