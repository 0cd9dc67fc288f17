"""Many distinct trials built from real records, for poll tests and benchmarks.

Each clone is a real ClinicalTrials.gov record (../shared/ctgov/records) with a new NCT number
in the synthetic range NCT9xxxxxxx, so sizes and shapes are real and ids never clash with real ones.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from conftest import RECORDS


def base_records(names=("NCT03934567", "NCT03281889", "NCT06388018", "NCT04207047", "NCT00184067")) -> list[dict]:
    return [json.loads((RECORDS / f"{n}.json").read_text(encoding="utf-8")) for n in names]


def synthetic_id(i: int) -> str:
    return f"NCT9{i:07d}"


def clones(n: int, bases: list[dict] | None = None, *, updated: str = "2026-01-15") -> list[dict]:
    bases = bases or base_records()
    out = []
    for i in range(n):
        r = copy.deepcopy(bases[i % len(bases)])
        ident = r["protocolSection"]["identificationModule"]
        ident["nctId"] = synthetic_id(i)
        ident.pop("nctIdAliases", None)
        r["protocolSection"]["statusModule"].setdefault("expandedAccessInfo", {}).pop("nctId", None)
        set_updated(r, updated)
        out.append(r)
    return out


def ids_of(records: list[dict]) -> list[str]:
    return [r["protocolSection"]["identificationModule"]["nctId"] for r in records]


def set_updated(r: dict, date: str) -> dict:
    r["protocolSection"]["statusModule"]["lastUpdatePostDateStruct"] = {"date": date, "type": "ACTUAL"}
    return r


def change_status(r: dict, status: str, *, updated: str) -> dict:
    r = copy.deepcopy(r)
    r["protocolSection"]["statusModule"]["overallStatus"] = status
    return set_updated(r, updated)
