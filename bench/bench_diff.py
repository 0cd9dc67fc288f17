"""What ``diff`` costs on the largest real record: NCT04267848, 1,148 sites, one site suspended.

Printed beside a floor: ``json.loads`` of the same two records (what any reader of them pays
before comparing anything), and ``diff`` with ``assume_canonical`` (the store's case: both sides
already canonical). Best of ``--repeat`` runs each. Needs the real-record corpus (see
tests/corpus.py: ``$TRIALWATCH_CORPUS`` or ``../shared/ctgov``).

    .venv/bin/python bench/bench_diff.py [--record NCT04267848] [--repeat 5]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from corpus import find_corpus  # noqa: E402

from trialwatch import record as rec  # noqa: E402
from trialwatch.diff import diff  # noqa: E402


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--record", default="NCT04267848")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    corpus = find_corpus()
    if corpus is None:
        print("no real-record corpus: set TRIALWATCH_CORPUS to a ctgov folder", file=sys.stderr)
        return 1
    text = (corpus / "records" / f"{args.record}.json").read_text(encoding="utf-8")
    old = json.loads(text)
    new = copy.deepcopy(old)
    sites = new["protocolSection"]["contactsLocationsModule"]["locations"]
    site = next(s for s in sites if s.get("status") == "RECRUITING")
    site["status"] = "SUSPENDED"
    new_text = json.dumps(new)
    co, cn = rec.canonical(old), rec.canonical(new)
    changes = diff(old, new)

    rows = [
        ("json.loads of both records (floor)", best(lambda: (json.loads(text), json.loads(new_text)), args.repeat)),
        ("diff(old, new)", best(lambda: diff(old, new), args.repeat)),
        ("diff(..., assume_canonical=True)", best(lambda: diff(co, cn, assume_canonical=True), args.repeat)),
    ]
    print(f"{args.record}: {len(sites)} sites, {len(text) / 1e6:.2f} MB; one site suspended -> "
          f"{[c.field for c in changes]}; best of {args.repeat}")
    floor = rows[0][1]
    for name, t in rows:
        print(f"  {name:<40} {t * 1000:8.1f} ms  {t / floor:5.1f}x floor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
