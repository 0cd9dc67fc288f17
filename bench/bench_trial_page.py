"""The trial page of a big record (issue 12): bytes of HTML and server-side render time.

The record (default NCT04267848, 1,148 sites) comes from ../shared/ctgov/records (or
$TRIALWATCH_CORPUS/records), is stored in a temporary SQLite database, and its page is asked
for N times through Starlette's TestClient (in process: no socket, no network). Reported beside
a floor: reading the record file and parsing its JSON, which any page of it must at least do.
Medians of N runs; also the page with ?near= (nearest sites ranked) and a filtered site list.

    .venv/bin/python bench/bench_trial_page.py [--record NCT04267848] [-n 30] [--out bench/results]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _corpus() -> Path:
    env = os.environ.get("TRIALWATCH_CORPUS")
    return Path(env) if env else ROOT.parent / "shared" / "ctgov"


def _median_ms(fn, n: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--record", default="NCT04267848")
    ap.add_argument("-n", type=int, default=30)
    ap.add_argument("--out", type=Path, default=None, help="write trial_page.json/.md here")
    args = ap.parse_args()

    os.environ.setdefault("TRIALWATCH_SECRET_KEY", "bench-secret-key-0123456789")
    from starlette.testclient import TestClient

    from trialwatch import config as configmod
    from trialwatch.store import open_store
    from trialwatch.web import create_app

    path = _corpus() / "records" / f"{args.record}.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    sites = len(raw["protocolSection"].get("contactsLocationsModule", {}).get("locations", []))
    with tempfile.TemporaryDirectory() as tmp:
        cfg_path = Path(tmp) / "config.yaml"
        cfg_path.write_text(f"database: sqlite:///{Path(tmp) / 'tw.db'}\ntrials: [{args.record}]\n"
                            "email:\n  transport: console\n  public_url: https://trials.example.org\n")
        cfg = configmod.load(cfg_path)
        store = open_store(cfg.database_url)
        store.record_fetch(raw)
        results = {"record": args.record, "sites": sites, "runs": args.n,
                   "floor_read_parse_ms": round(_median_ms(lambda: json.loads(path.read_bytes()), args.n), 2)}
        with TestClient(create_app(cfg, store)) as client:
            for name, url in (("page", f"/trials/{args.record}"),
                              ("near", f"/trials/{args.record}?near=44.0225,-92.4699"),
                              ("filtered", f"/trials/{args.record}?country=United+States&state=Minnesota")):
                body = client.get(url).content  # warm: templates compiled, gazetteer loaded
                results[f"{name}_bytes"] = len(body)
                results[f"{name}_ms"] = round(_median_ms(lambda u=url: client.get(u), args.n), 2)
        store.close()
    lines = [f"# Trial page of {args.record} ({sites} sites), median of {args.n}", "",
             "| what | HTML bytes | ms |", "|---|---:|---:|",
             f"| floor: read + parse the record JSON | | {results['floor_read_parse_ms']} |"]
    for name in ("page", "near", "filtered"):
        lines.append(f"| {name} | {results[f'{name}_bytes']:,} | {results[f'{name}_ms']} |")
    print("\n".join(lines))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "trial_page.json").write_text(json.dumps(results, indent=2) + "\n")
        (args.out / "trial_page.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
