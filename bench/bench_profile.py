"""Profile one trialwatch poll (cProfile or tracemalloc) in a subprocess, against the stand-in.

    .venv/bin/python bench/bench_profile.py --n 2000 --c 20 --phase steady
    .venv/bin/python bench/bench_profile.py --n 10000 --phase first --tracemalloc

The poll runs in its own process exactly as `trialwatch poll --json --no-send` does (same
config as bench/run.py), under cProfile (top functions by cumulative and own time printed) or
tracemalloc (peak and the top allocation sites at the peak).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (re-executes under .venv when needed)

CHILD = r'''
import sys, cProfile, pstats, tracemalloc, linecache
mode, out = sys.argv[1], sys.argv[2]
argv = sys.argv[3:]
from trialwatch.cli import main
if mode == "cprofile":
    prof = cProfile.Profile()
    prof.enable()
    try:
        main(argv)
    finally:
        prof.disable()
        prof.dump_stats(out)
        st = pstats.Stats(out, stream=sys.stderr)
        st.sort_stats("cumulative").print_stats(45)
        st.sort_stats("tottime").print_stats(25)
else:
    tracemalloc.start(12)
    try:
        main(argv)
    finally:
        cur, peak = tracemalloc.get_traced_memory()
        snap = tracemalloc.take_snapshot()
        print(f"tracemalloc: peak {peak/1e6:.1f} MB, at exit {cur/1e6:.1f} MB", file=sys.stderr)
        for s in snap.statistics("traceback")[:8]:
            print(f"--- {s.size/1e6:.1f} MB in {s.count} blocks", file=sys.stderr)
            for line in s.traceback.format()[-12:]:
                print(line, file=sys.stderr)
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--c", type=int, default=20)
    ap.add_argument("--phase", choices=("first", "steady", "unchanged"), default="steady")
    ap.add_argument("--tracemalloc", action="store_true")
    ap.add_argument("--no-subscriber", action="store_true")
    args = ap.parse_args()
    corpus = run.Corpus(args.n)
    api = run.make_standin(corpus)
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="twprof-") as t:
        tw = run.Trialwatch(api, corpus, Path(t), subscriber=not args.no_subscriber)
        try:
            if args.phase != "first":
                tw.poll("baseline")
            if args.phase == "steady":
                run.refresh_registry(api, corpus, args.c)
            mode = "tracemalloc" if args.tracemalloc else "cprofile"
            api.reset_requests()
            m = run.run_measured([str(run.VENV_PY), "-c", CHILD, mode, str(Path(t) / "prof.out"),
                                  "--config", str(tw.config), "poll", "--json", "--no-send"],
                                 env=tw.env, cwd=tw.dir)
            print(f"rc={m['rc']} wall={m['wall_s']:.2f}s rss={m['max_rss_mb']:.0f}MB "
                  f"requests={len(api.requests)}\n{m['stdout']}\n{m['stderr']}")
        finally:
            api.stop()
    del problems


if __name__ == "__main__":
    main()
