"""diff(old, new) -> list[Change]: what changed between two versions of a record, for a physician.

PLACEHOLDER: the field catalogue is being written; only the Change type and severities are final.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

SEVERITY_RANK = {"critical": 3, "important": 2, "minor": 1}


@dataclass(frozen=True)
class Change:
    field: str            # stable machine name: overall_status, site_status, ... or a JSON path
    label: str            # what a person reads: "Overall status", "Site Mayo Clinic (Rochester, US)"
    old: Any              # JSON-able value before (None: absent)
    new: Any              # JSON-able value after (None: absent)
    severity: str         # critical | important | minor
    detail: str | None = None   # e.g. a readable line diff of eligibility criteria
    site: str | None = None     # facility name, for per-site changes

    @property
    def rank(self) -> int:
        return SEVERITY_RANK[self.severity]

    def to_dict(self) -> dict:
        return asdict(self)


def diff(old: dict, new: dict, *, ignore: tuple[str, ...] | list[str] = ()) -> list[Change]:
    raise NotImplementedError
