"""The first poll of N trials never seen (every record fetched and stored), beside its floor.

    .venv/bin/python bench/bench_first_poll.py                      # N=10,000, 3 rounds, SQLite
    .venv/bin/python bench/bench_first_poll.py --n 2000 --rounds 5
    .venv/bin/python bench/bench_first_poll.py --database postgresql+psycopg://postgres@127.0.0.1:5432/postgres

Subject: ``trialwatch poll --json --no-send`` over a fresh database, the config of bench/run.py
(the N trials under ``trials:`` and one subscriber following all of them; ``--no-subscriber``
drops her). Floor (same run, interleaved with the subject, order alternating): a stdlib script
making the same requests (replayed from the stand-in's log of the first round) and, per record,
json.loads, a canonical JSON dump, one zlib blob (level 9), inserted into SQLite, all records in
one transaction. Wall, CPU (user+sys) and peak RSS of each process; medians over ``--rounds``.
With ``--database postgresql...`` trialwatch writes to a new database on that server each round
(created and dropped here); the floor stays SQLite. Results: bench/results/first_poll[-pg].{md,json}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (re-executes under .venv when needed)
from run import RESULTS, TRIALWATCH, VENV_PY, Corpus, Trialwatch, child_env, make_standin, run_measured  # noqa: E402

FLOOR = r'''
import http.client, json, sqlite3, sys, urllib.parse, zlib
host, port = sys.argv[1].split(":")
conn = http.client.HTTPConnection(host, int(port))
db = sqlite3.connect(sys.argv[3])
db.execute("CREATE TABLE IF NOT EXISTS blobs (nct_id TEXT PRIMARY KEY, body BLOB)")
n = 0
with db:
    for line in open(sys.argv[2]):
        path, query = json.loads(line)
        conn.request("GET", path + ("?" + urllib.parse.urlencode(query) if query else ""))
        page = json.loads(conn.getresponse().read())
        for study in page.get("studies", ()) if isinstance(page, dict) else ():
            body = json.dumps(study, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
            nct = study["protocolSection"]["identificationModule"]["nctId"]
            db.execute("INSERT INTO blobs VALUES (?, ?)", (nct, zlib.compress(body, 9)))
            n += 1
db.close()
print(json.dumps({"stored": n}))
'''


class PgDatabases:
    """A new PostgreSQL database per round, on the server of ``url`` (dropped at the end)."""

    def __init__(self, url: str) -> None:
        from sqlalchemy.engine import make_url

        self.url = make_url(url)
        self.made: list[str] = []

    def _admin(self, sql: str) -> None:
        import psycopg

        u = self.url
        with psycopg.connect(host=u.host or "127.0.0.1", port=u.port or 5432, user=u.username,
                             password=u.password, dbname=u.database or "postgres", autocommit=True) as c:
            c.execute(sql)

    def new(self, i: int) -> str:
        name = f"twbench_first_{os.getpid()}_{i}"
        self._admin(f'DROP DATABASE IF EXISTS "{name}"')
        self._admin(f'CREATE DATABASE "{name}"')
        self.made.append(name)
        return self.url.set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        for name in self.made:
            self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--database", default=None, help="a PostgreSQL URL (default: SQLite in a temp dir)")
    ap.add_argument("--no-subscriber", action="store_true")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    started = time.perf_counter()
    import compileall  # children do not write bytecode (bench/run.py): compile as an install would

    compileall.compile_dir(str(run.ROOT / "trialwatch"), quiet=1)
    print(f"== first poll N={args.n}: building the stand-in", flush=True)
    corpus = Corpus(args.n)
    api = make_standin(corpus)
    host = api.base_url.split("//", 1)[1].split("/", 1)[0]
    pg = PgDatabases(args.database) if args.database else None
    subj: list[dict] = []
    floor: list[dict] = []
    try:
        with tempfile.TemporaryDirectory(prefix="twbench-first-") as t:
            tmp = Path(t)
            replay = tmp / "requests.jsonl"
            for i in range(args.rounds):
                rdir = tmp / f"round{i}"
                rdir.mkdir()
                tw = Trialwatch(api, corpus, rdir, subscriber=not args.no_subscriber)
                if pg:
                    url = pg.new(i)
                    tw.config.write_text(tw.config.read_text().replace(
                        f"sqlite:///{tw.dir / 'trialwatch.db'}", url))
                    from trialwatch.store import open_store  # migrate outside the measured run

                    open_store(url).close()
                env = child_env(rdir)

                def run_subject(tw: Trialwatch = tw, i: int = i) -> None:
                    m = tw.poll(f"first poll, round {i}")
                    r = m["report"]
                    assert r["complete"] and r["trials_checked"] == args.n and not r["errors"], r
                    if not replay.exists():
                        replay.write_text("".join(json.dumps([p, q]) + "\n" for _, p, q in api.requests))
                    subj.append(m)

                def run_floor(rdir: Path = rdir, env: dict = env) -> None:
                    m = run_measured([str(VENV_PY), "-c", FLOOR, host, str(replay), str(rdir / "floor.db")],
                                     env=env, cwd=rdir)
                    if m["rc"] != 0:
                        run.fail("floor", m)
                    assert json.loads(m["stdout"])["stored"] == args.n, m["stdout"]
                    floor.append(m)

                # The floor replays the subject's requests: the first round starts with the subject.
                for step in ((run_subject, run_floor) if i % 2 == 0 else (run_floor, run_subject)):
                    step()
                print(f"  round {i}: trialwatch {subj[-1]['wall_s']:.2f} s wall, "
                      f"{subj[-1]['user_s'] + subj[-1]['sys_s']:.2f} s CPU, {subj[-1]['max_rss_mb']:.0f} MB | "
                      f"floor {floor[-1]['wall_s']:.2f} s wall, {floor[-1]['user_s'] + floor[-1]['sys_s']:.2f} s CPU",
                      flush=True)
    finally:
        api.stop()
        if pg:
            pg.drop_all()

    def med(ms: list[dict], f) -> float:  # noqa: ANN001
        return statistics.median(f(m) for m in ms)

    res = {
        "when": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "host": f"{platform.node()} · {os.cpu_count()} CPUs · Python {platform.python_version()}",
        "command": "bench/bench_first_poll.py " + " ".join(sys.argv[1:]), "commit": run.git_describe(),
        "n": args.n, "rounds": args.rounds, "database": "postgresql" if pg else "sqlite",
        "subscriber": not args.no_subscriber,
        "trialwatch": {"wall_s": med(subj, lambda m: m["wall_s"]), "cpu_s": med(subj, lambda m: m["user_s"] + m["sys_s"]),
                       "rss_mb": med(subj, lambda m: m["max_rss_mb"]), "requests": subj[0]["requests"]},
        "floor": {"wall_s": med(floor, lambda m: m["wall_s"]), "cpu_s": med(floor, lambda m: m["user_s"] + m["sys_s"]),
                  "rss_mb": med(floor, lambda m: m["max_rss_mb"])},
    }
    t_, f_ = res["trialwatch"], res["floor"]
    res["ratio_cpu"] = t_["cpu_s"] / f_["cpu_s"]
    res["ratio_wall"] = t_["wall_s"] / f_["wall_s"]
    res["elapsed_s"] = time.perf_counter() - started
    md = "\n".join([
        f"# First poll, N={args.n} new trials ({res['database']}) — {res['when']}", "",
        f"trialwatch at {res['commit']}. Host: {res['host']}. Command: `{res['command']}`. "
        f"Medians of {args.rounds} rounds, subject and floor interleaved.", "",
        "| run | wall s | CPU s | peak RSS MB |", "|---|---:|---:|---:|",
        f"| `trialwatch poll --no-send`, first poll ({t_['requests']} requests"
        f"{', one subscriber following all' if res['subscriber'] else ''}) | {t_['wall_s']:.2f} | {t_['cpu_s']:.2f} | {t_['rss_mb']:.0f} |",
        f"| floor: same requests, parse, one zlib blob per record, one SQLite transaction | {f_['wall_s']:.2f} | "
        f"{f_['cpu_s']:.2f} | {f_['rss_mb']:.0f} |", "",
        f"Ratio: **{res['ratio_cpu']:.2f}× CPU**, {res['ratio_wall']:.2f}× wall (goal ≤ 1.5×).", ""])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "first_poll" + ("-pg" if pg else "") + ("" if args.n == 10000 else f"-{args.n}")
    (out / f"{name}.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / f"{name}.md").write_text(md)
    print("\n" + md)
    return 0


if __name__ == "__main__":
    assert TRIALWATCH.exists()
    sys.exit(main())
