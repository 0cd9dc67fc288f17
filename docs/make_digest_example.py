"""Render a sample digest to docs/digest-example.html from real records in a temporary database.

    .venv/bin/python docs/make_digest_example.py

Two real records change the way trials do: one starts recruiting (and gains a central contact,
a newly recruiting site, a closed site and a reworded criterion), another is suspended.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RECORDS = Path(os.environ.get("TRIALWATCH_SHARED", ROOT.parent / "shared")) / "ctgov" / "records"


def main() -> None:
    os.environ.setdefault("TRIALWATCH_SECRET_KEY", "example-only-secret-key-0123456789")
    from trialwatch import config, notify
    from trialwatch.store import open_store, utcnow

    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{tmp}/example.db")
        cfg = config.loads("""
email: {from: "trialwatch <alerts@trialwatch.example.org>", public_url: "https://trialwatch.example.org"}
subscribers:
  - {email: a.ruiz@example.org, name: Dr Ana Ruiz, trials: [NCT03934567, NCT03281889], min_severity: important}
""")
        notify.sync_subscribers(store, cfg)
        then, now = utcnow() - dt.timedelta(days=1), utcnow()

        a = json.loads((RECORDS / "NCT03934567.json").read_text())
        store.record_fetch(a, fetched_at=then)
        a2 = copy.deepcopy(a)
        ps = a2["protocolSection"]
        ps["statusModule"]["overallStatus"] = "RECRUITING"
        cl = ps["contactsLocationsModule"]
        cl["centralContacts"] = [{"name": "Clinical Trials Office", "role": "CONTACT",
                                  "phone": "+86 10 8778 8888", "email": "trials@example.cn"}]
        cl["locations"][0]["status"] = "RECRUITING"
        cl["locations"][0]["contacts"] = [{"name": "Yuankai Shi", "role": "CONTACT", "phone": "+86 10 8778 8000"}]
        del cl["locations"][1]
        el = ps["eligibilityModule"]
        el["eligibilityCriteria"] = el["eligibilityCriteria"].replace(
            "Eastern Cooperative Oncology Group (ECOG) performance status of 0 to 2",
            "Eastern Cooperative Oncology Group (ECOG) performance status of 0 to 1")
        store.record_fetch(a2, fetched_at=now)

        b = json.loads((RECORDS / "NCT03281889.json").read_text())
        store.record_fetch(b, fetched_at=then)
        b2 = copy.deepcopy(b)
        b2["protocolSection"]["statusModule"]["overallStatus"] = "SUSPENDED"
        b2["protocolSection"]["statusModule"]["whyStopped"] = "Drug supply interruption"
        store.record_fetch(b2, fetched_at=now)

        [mid] = notify.compose_digests(store, cfg, now=now)
        from email import message_from_bytes, policy
        from trialwatch.store import Message

        with store.session() as s:
            msg = message_from_bytes(s.get(Message, mid).body, policy=policy.default)
        out = ROOT / "docs" / "digest-example.html"
        out.write_text(msg.get_body(("html",)).get_content(), encoding="utf-8")
        store.close()
        print(f"wrote {out} ({msg['Subject']})")


if __name__ == "__main__":
    main()
