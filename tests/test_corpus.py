"""Where the tests find real records, and `python -m tests.corpus fetch DIR` for someone who has
none (faked HTTP: respx; never the network)."""

from __future__ import annotations

import json

import httpx
import respx

import corpus


def _study(nct: str, title: str = "A title") -> dict:
    return {"protocolSection": {"identificationModule": {"nctId": nct, "briefTitle": title}}}


def test_the_corpus_is_taken_from_trialwatch_corpus_first(tmp_path):
    given = tmp_path / "mine"
    (given / "records").mkdir(parents=True)
    (given / "records" / "NCT00000001.json").write_text("{}")
    shared = tmp_path / "repo-parent" / "shared" / "ctgov" / "records"
    shared.mkdir(parents=True)
    (shared / "NCT00000002.json").write_text("{}")
    root = tmp_path / "repo-parent" / "trialwatch"
    assert corpus.find_corpus({"TRIALWATCH_CORPUS": str(given)}, root=root) == given
    assert corpus.find_corpus({}, root=root) == shared.parent


def test_a_folder_without_records_is_no_corpus(tmp_path):
    (tmp_path / "records").mkdir()
    assert corpus.find_corpus({"TRIALWATCH_CORPUS": str(tmp_path)}, root=tmp_path / "x" / "y") is None
    assert corpus.find_corpus({}, root=tmp_path / "nothing-beside" / "trialwatch") is None


@respx.mock(base_url="https://ctgov.test/api/v2", assert_all_called=True)
def test_fetch_writes_each_record_by_its_nct_number(respx_mock, tmp_path):
    routes = {n: respx_mock.get(f"/studies/{n}").respond(json=_study(n, f"Trial {n}"))
              for n in ("NCT00000001", "NCT00000002")}
    log: list[str] = []

    class Out:
        def write(self, s: str) -> None:
            log.append(s)

    written = corpus.fetch(tmp_path, ["NCT00000001", "NCT00000002"], base_url="https://ctgov.test/api/v2", out=Out())

    assert written == ["NCT00000001", "NCT00000002"]
    for nct, route in routes.items():
        assert route.call_count == 1
        data = json.loads((tmp_path / "records" / f"{nct}.json").read_text(encoding="utf-8"))
        assert data == _study(nct, f"Trial {nct}")
    # What the tests then read: the folder is a corpus.
    assert corpus.find_corpus({"TRIALWATCH_CORPUS": str(tmp_path)}) == tmp_path


@respx.mock(base_url="https://ctgov.test/api/v2")
def test_fetch_reports_what_it_could_not_get_and_keeps_the_rest(respx_mock, tmp_path):
    respx_mock.get("/studies/NCT00000001").respond(404, text="not found")
    respx_mock.get("/studies/NCT00000002").respond(200, text="<html>maintenance</html>")
    respx_mock.get("/studies/NCT00000003").respond(json=_study("NCT09999999"))  # another trial
    respx_mock.get("/studies/NCT00000004").mock(side_effect=httpx.ConnectError("Name or service not known"))
    respx_mock.get("/studies/NCT00000005").respond(json=_study("NCT00000005"))
    lines: list[str] = []

    class Out:
        def write(self, s: str) -> None:
            lines.append(s)

    ids = [f"NCT0000000{i}" for i in range(1, 6)]
    written = corpus.fetch(tmp_path, ids, base_url="https://ctgov.test/api/v2", out=Out())

    assert written == ["NCT00000005"]
    assert sorted(p.name for p in (tmp_path / "records").iterdir()) == ["NCT00000005.json"]
    text = "".join(lines)
    for nct in ids[:4]:
        assert f"{nct}: not fetched" in text


def test_fetch_asks_for_every_record_the_tests_read():
    # The list fetch downloads is the one the tests use: every base record of the clones is in it.
    import inspect

    defaults = inspect.signature(corpus.base_records).parameters["names"].default
    assert set(defaults) <= set(corpus.NCT_IDS)


def test_without_a_corpus_the_tests_that_need_it_skip_with_one_reason_and_the_rest_pass(tmp_path):
    # What a bare clone sees: a subprocess pytest with the corpus hidden (an empty folder).
    import os
    import re
    import subprocess
    import sys

    empty = tmp_path / "no-corpus"
    empty.mkdir()
    env = dict(os.environ, TRIALWATCH_CORPUS=str(empty), TRIALWATCH_TEST_DATABASE_URL="")
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                          "tests/test_record.py"],
                         cwd=corpus.ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:]
    reasons = set(re.findall(r"^SKIPPED \[\d+\] [^:]+:\d+: (.*)$", res.stdout, flags=re.M))
    assert reasons == {corpus.SKIP_REASON}
    assert re.search(r"\d+ passed, \d+ skipped", res.stdout)
