"""The naive baseline: what a generic page watcher does with N trial records.

One sequential GET of ``/studies/{id}`` per trial (httpx, one keep-alive connection), each
body compared by SHA-256 with the previous copy kept on disk, the new copy written back when it
differs. Prints one JSON object: requests, bytes_received, new, changed, unchanged, errors.

    python bench/bench_naive.py --base-url http://127.0.0.1:PORT/api/v2 --ids ids.txt --state DIR
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import httpx


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--ids", required=True, help="file with one NCT id a line")
    ap.add_argument("--state", required=True, help="folder holding the previous copy of each record")
    args = ap.parse_args(argv)
    ids = [line.strip() for line in Path(args.ids).read_text().splitlines() if line.strip()]
    state = Path(args.state)
    state.mkdir(parents=True, exist_ok=True)
    out = {"requests": 0, "bytes_received": 0, "new": 0, "changed": 0, "unchanged": 0, "errors": 0}
    with httpx.Client(base_url=args.base_url.rstrip("/") + "/", timeout=30) as http:
        for nct in ids:
            out["requests"] += 1
            try:
                resp = http.get(f"studies/{nct}")
                resp.raise_for_status()
            except httpx.HTTPError as e:
                out["errors"] += 1
                print(f"{nct}: {e}", file=sys.stderr)
                continue
            body = resp.content
            out["bytes_received"] += len(body)
            path = state / f"{nct}.json"
            if not path.exists():
                out["new"] += 1
            elif hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(body).digest():
                out["unchanged"] += 1
                continue
            else:
                out["changed"] += 1
            path.write_bytes(body)
    print(json.dumps(out))
    return 1 if out["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
