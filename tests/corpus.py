"""The real-record corpus the tests read, and many distinct trials cloned from it.

The tests read real ClinicalTrials.gov records (API v2) from a ctgov-like folder
(``records/NCT….json``, optionally ``records/snapshots/`` and ``history/``). The records are
public data copied from ClinicalTrials.gov and are kept outside this repository. The folder is:

1. ``$TRIALWATCH_CORPUS``, when set (a path to a ctgov-like folder); else
2. ``../shared/ctgov`` beside the repository (where CI lays it).

Without one, every test that needs it is skipped with one reason (``SKIP_REASON``); everything
else runs. Someone online can download the same records from ClinicalTrials.gov itself:

    python -m tests.corpus fetch DIR        # then: TRIALWATCH_CORPUS=DIR pytest

``fetch`` gets the current version of each record (``GET /studies/{nct}``); the older versions in
``records/snapshots/`` and ``history/`` are not downloaded, so the few tests that read them stay
skipped. Each clone (``clones``) is a real record with a new NCT number in the synthetic range
NCT9xxxxxxx, so sizes and shapes are real and ids never clash with real ones.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV_VAR = "TRIALWATCH_CORPUS"
SKIP_REASON = ("real ClinicalTrials.gov records not found: set TRIALWATCH_CORPUS to a ctgov folder, "
               "or run python -m tests.corpus fetch DIR")

# The records the tests read, by NCT number: what `fetch` downloads.
NCT_IDS = (
    "NCT00184067", "NCT00763412", "NCT00973089", "NCT02210780", "NCT02299791", "NCT02513394",
    "NCT02552212", "NCT03064438", "NCT03281889", "NCT03418623", "NCT03475563", "NCT03630471",
    "NCT03934567", "NCT04207047", "NCT04267848", "NCT04431453", "NCT05594173", "NCT06171568",
    "NCT06388018",
)
API = "https://clinicaltrials.gov/api/v2"


def find_corpus(environ: dict | None = None, root: Path = ROOT) -> Path | None:
    """The ctgov-like folder holding ``records/``, or None when there is none."""
    environ = os.environ if environ is None else environ
    given = environ.get(ENV_VAR)
    folder = Path(given) if given else root.parent / "shared" / "ctgov"
    return folder if any((folder / "records").glob("NCT*.json")) else None


CTGOV = find_corpus()
# Paths under CTGOV; with no corpus they point at nothing, and the tests using them are skipped.
RECORDS = (CTGOV or ROOT / "no-corpus") / "records"


def record_path(nct: str) -> Path:
    """The file of a real record. Without a corpus, a test asking for one is skipped (outside
    pytest, e.g. in bench/, it is an error that says how to get the corpus)."""
    if CTGOV is None:
        if "pytest" in sys.modules:
            import pytest

            pytest.skip(SKIP_REASON)
        raise FileNotFoundError(SKIP_REASON)
    return RECORDS / (nct if nct.endswith(".json") else f"{nct}.json")


def _skip(reason: str):
    import pytest

    pytest.skip(reason)


def corpus_file(relative: str) -> Path:
    """A file of the corpus other than a current record (``records/snapshots/…``,
    ``history/…``). ``fetch`` does not download those: a corpus without it skips the test."""
    path = record_path("x").parent.parent / relative  # skips when there is no corpus at all
    if not path.exists():
        _skip(f"this corpus has no {relative} (python -m tests.corpus fetch downloads current records only)")
    return path


def record_params() -> list:
    """Every real record file, for ``pytest.mark.parametrize``; without a corpus, one parameter
    skipped with SKIP_REASON (not an empty set, which pytest skips with a reason of its own)."""
    if CTGOV is None:
        import pytest

        return [pytest.param(None, id="no-corpus", marks=pytest.mark.skip(reason=SKIP_REASON))]
    return sorted(RECORDS.glob("NCT*.json"))


def fetch(dest: Path, ids=NCT_IDS, *, transport=None, base_url: str = API, out=sys.stderr) -> list[str]:
    """Download each record as ``dest/records/{nct}.json``; returns the ids written. A record
    that cannot be fetched is reported and skipped; the others are still written."""
    import httpx

    from trialwatch.ctgov import default_user_agent

    folder = Path(dest) / "records"
    folder.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    with httpx.Client(base_url=base_url.rstrip("/") + "/", transport=transport, timeout=60,
                      follow_redirects=True,
                      headers={"User-Agent": default_user_agent(), "Accept": "application/json"}) as http:
        for nct in ids:
            try:
                resp = http.get(f"studies/{nct}")
                resp.raise_for_status()
                data = resp.json()
            except (httpx.HTTPError, ValueError) as e:
                print(f"{nct}: not fetched: {e}", file=out)
                continue
            got = data.get("protocolSection", {}).get("identificationModule", {}).get("nctId") \
                if isinstance(data, dict) else None
            if got != nct:
                print(f"{nct}: not fetched: the answer is not that study record ({got!r})", file=out)
                continue
            (folder / f"{nct}.json").write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
            written.append(nct)
            print(f"{nct}: ok", file=out)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.corpus", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download the records the tests read from ClinicalTrials.gov into DIR/records")
    f.add_argument("dir", type=Path)
    f.add_argument("--base-url", default=API)
    args = parser.parse_args(argv)
    written = fetch(args.dir, base_url=args.base_url)
    print(f"{len(written)} of {len(NCT_IDS)} records in {args.dir / 'records'}; "
          f"now run: {ENV_VAR}={args.dir} pytest", file=sys.stderr)
    return 0 if len(written) == len(NCT_IDS) else 1


def base_records(names=("NCT03934567", "NCT03281889", "NCT06388018", "NCT04207047", "NCT00184067")) -> list[dict]:
    return [json.loads(record_path(n).read_text(encoding="utf-8")) for n in names]


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


if __name__ == "__main__":
    sys.exit(main())
