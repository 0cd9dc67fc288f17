"""Storage per snapshot: the largest real record, 100 unchanged checks, and a year of daily
versions of the 1,148-site trial (one site changes status each day).

    .venv/bin/python bench/bench_storage.py
"""

from __future__ import annotations

import copy
import json
import os
import sys
import tempfile
from pathlib import Path

from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT.parent / "shared" / "ctgov" / "records"
sys.path.insert(0, str(ROOT))

from trialwatch import store as st  # noqa: E402


def rows(store) -> int:
    with store.session() as s:
        return sum(s.scalar(select(func.count()).select_from(t)) for t in st.Base.metadata.sorted_tables)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tw.db"
        store = st.open_store(f"sqlite:///{path}")
        largest = max(RECORDS.glob("*.json"), key=lambda p: p.stat().st_size)
        raw = json.loads(largest.read_text())
        store.record_fetch(raw)
        first = store.storage_bytes()
        print(f"largest record {largest.name}: {largest.stat().st_size:,} bytes as fetched; "
              f"stored {first['compressed_bytes']:,} bytes compressed in {first['blobs']} blobs "
              f"(canonical JSON {first['raw_bytes']:,} bytes incl. parts)")
        before = rows(store)
        for _ in range(100):
            store.record_fetch(raw)
        print(f"100 unchanged checks: rows {before} -> {rows(store)}, "
              f"bytes {first['compressed_bytes']:,} -> {store.storage_bytes()['compressed_bytes']:,}")

        big = json.loads((RECORDS / "NCT04267848.json").read_text())
        store.record_fetch(big)
        base = store.storage_bytes()["compressed_bytes"]
        sites = big["protocolSection"]["contactsLocationsModule"]["locations"]
        cycle = ["RECRUITING", "SUSPENDED", "ACTIVE_NOT_RECRUITING"]
        for day in range(365):
            v = copy.deepcopy(big) if day == 0 else v  # noqa: F821 - built on day 0
            site = v["protocolSection"]["contactsLocationsModule"]["locations"][(day * 37) % len(sites)]
            site["status"] = cycle[(cycle.index(site.get("status", "RECRUITING")) + 1) % 3]
            store.record_fetch(v)
        year = store.storage_bytes()["compressed_bytes"] - base
        snaps = store.storage_bytes()["snapshots"]
        store.close()
        print(f"NCT04267848 (1,148 sites), 365 daily versions each changing one site: "
              f"{year:,} bytes ({year / 365:,.0f} bytes per version); whole records would be "
              f"~{365 * 57177:,} bytes; snapshots stored in all: {snaps}")
        print(f"database file: {os.path.getsize(path):,} bytes (after all of the above)")


if __name__ == "__main__":
    main()
