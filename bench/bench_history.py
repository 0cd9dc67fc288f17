"""Registry history (issue 15): what a first look and a backfill cost.

Two cases against the local stand-in (tests/standin.py) serving SYNTHETIC version sequences
(tests/history_corpus.py) built from a real record of ../shared/ctgov/records:

* one trial with 50 versions: `check` (live record + version list), then `backfill`;
* 100 trials x 20 versions: the same, 100 trials at once.

For each: requests, bytes received, seconds here (127.0.0.1, no throttle), stored bytes
(compressed blobs) and rows; a rerun of the backfill with nothing new; and the wall time at
the API's polite rate, which is ARITHMETIC, not a measurement: requests x the throttle's
spacing (60 / ctgov.requests_per_minute = 1.2 s at the default 50/min).

    .venv/bin/python bench/bench_history.py [--record NCT04267848] [--out bench/results]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from history_corpus import sequence, set_nct  # noqa: E402
from standin import StandIn  # noqa: E402

from trialwatch import store as st  # noqa: E402
from trialwatch.check import check_trials  # noqa: E402
from trialwatch.config import loads  # noqa: E402
from trialwatch.ctgov import Client  # noqa: E402
from trialwatch.history import backfill  # noqa: E402

POLITE_PER_MINUTE = 50  # ctgov.requests_per_minute default


def case(base: dict, trials: int, versions: int) -> dict:
    ids = [f"NCT9{i:07d}" for i in range(trials)]
    seqs = {n: sequence(set_nct(base, n), versions) for n in ids}
    with tempfile.TemporaryDirectory() as tmp, StandIn([live for _, live in seqs.values()]) as api:
        for n, (vs, _) in seqs.items():
            api.put_history(n, vs)
        db = f"sqlite:///{Path(tmp) / 'tw.db'}"
        config = loads(f"database: {db}\nctgov:\n  base_url: {api.base_url}\n  requests_per_minute: 100000\n")
        store = st.open_store(db)
        out = {"trials": trials, "versions_per_trial": versions}
        with Client.from_config(config.ctgov) as client:
            t0 = time.perf_counter()
            check_trials(store, config, ids, client=client)
            out["first_look"] = {"requests": client.stats.requests, "bytes": client.stats.bytes_received,
                                 "seconds": round(time.perf_counter() - t0, 3)}
            before = store.storage_bytes()
            r0, b0 = client.stats.requests, client.stats.bytes_received
            t0 = time.perf_counter()
            rep = backfill(store, config, client, ids)
            after = store.storage_bytes()
            out["backfill"] = {"requests": client.stats.requests - r0, "bytes": client.stats.bytes_received - b0,
                               "seconds": round(time.perf_counter() - t0, 3),
                               "versions_stored": rep.versions_stored, "changes": rep.changes,
                               "stored_bytes": after["compressed_bytes"] - before["compressed_bytes"],
                               "stored_raw_bytes": after["raw_bytes"] - before["raw_bytes"],
                               "blobs": after["blobs"] - before["blobs"]}
            r0 = client.stats.requests
            again = backfill(store, config, client, ids)
            out["rerun"] = {"requests": client.stats.requests - r0, "versions_stored": again.versions_stored}
        store.close()
    spacing = 60.0 / POLITE_PER_MINUTE
    for k in ("first_look", "backfill"):
        out[k]["polite_wall_s_arithmetic"] = round(out[k]["requests"] * spacing, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--record", default="NCT03934567", help="real record (../shared/ctgov/records) to build on")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    base = json.loads((ROOT.parent / "shared" / "ctgov" / "records" / f"{args.record}.json").read_text())
    results = {"record": args.record, "polite_rate_per_minute": POLITE_PER_MINUTE,
               "cases": [case(base, 1, 50), case(base, 100, 20)]}
    lines = [f"# Registry history benchmark (synthetic versions of {args.record})", "",
             "| case | step | requests | bytes | seconds (local) | stored bytes | wall at 50/min (arithmetic) |",
             "|---|---|---|---|---|---|---|"]
    for c in results["cases"]:
        name = f"{c['trials']} trial(s) x {c['versions_per_trial']} versions"
        f, b = c["first_look"], c["backfill"]
        lines.append(f"| {name} | first check (live + version list) | {f['requests']} | {f['bytes']:,} | "
                     f"{f['seconds']} | | {f['polite_wall_s_arithmetic']} s |")
        lines.append(f"| {name} | backfill ({b['versions_stored']} versions, {b['changes']} changes) | "
                     f"{b['requests']} | {b['bytes']:,} | {b['seconds']} | {b['stored_bytes']:,} | "
                     f"{b['polite_wall_s_arithmetic']} s |")
        lines.append(f"| {name} | backfill rerun, nothing new | {c['rerun']['requests']} | | | | |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "history.md").write_text(text)
    (out / "history.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
