"""One poll as the daemon (`trialwatch run`) makes it: inside a process that is already up.

A cron-driven watcher such as urlwatch starts a process for every run; `trialwatch run` starts
once and polls on schedule, so its polls pay no interpreter start-up or imports. The bench
driver runs this script as a child:

    child: load config, open the store, baseline poll (not timed)  ->  prints "ready"
    driver: refreshes the stand-in's registry (C trials changed), writes "go" (or "last")
    child: times one poll with time.perf_counter()  ->  prints the report as JSON; repeat

    python bench/bench_daemon_poll.py CONFIG
"""

from __future__ import annotations

import json
import sys
import time


def main(config_path: str) -> None:
    from trialwatch import poller
    from trialwatch.config import load
    from trialwatch.store import open_store

    config = load(config_path)
    store = open_store(config.database_url)
    if config.subscribers:
        from trialwatch.notify import sync_subscribers

        sync_subscribers(store, config)
    # The daemon keeps one API client for its life (trialwatch.daemon.Daemon.client).
    from trialwatch.ctgov import Client

    client = Client.from_config(config.ctgov)
    first = poller.poll(store, config, send=False, client=client)
    print(json.dumps({"ready": True, "baseline": first.to_dict()}), flush=True)
    # One timed poll per line from the driver (it refreshes the registry in between); "last"
    # ends the process after its poll.
    for line in sys.stdin:
        t0 = time.perf_counter()
        report = poller.poll(store, config, send=False, client=client)
        seconds = time.perf_counter() - t0
        print(json.dumps({"seconds": seconds, "report": report.to_dict()}), flush=True)
        if line.strip() == "last":
            break
    store.close()


if __name__ == "__main__":
    main(sys.argv[1])
