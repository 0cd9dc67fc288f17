"""Exit codes mean what the README says: the README's table and trialwatch.errors agree, and each
row of the table is what a command really returns in that situation (the real CLI, the API
stand-in on 127.0.0.1, a real SMTP server)."""

from __future__ import annotations

import inspect
import json
import re
import socket
from pathlib import Path

import pytest

from trialwatch import ctgov, errors
from trialwatch.cli import EXIT_CODES as HELP_EPILOG
from trialwatch.cli import main

from smtp_server import smtp_server  # noqa: F401 - the fixture
from standin import StandIn

ROOT = Path(__file__).resolve().parent.parent
NCT = "NCT03268603"
SECRET = "test-secret-key-0123456789abcdef"


def readme_table() -> dict[int, str]:
    """{code: meaning} from the README's "Exit codes" table."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### Exit codes", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\|\s*(\d+)\s*\|\s*(.+?)\s*\|\s*$", section, flags=re.M)
    return {int(code): meaning for code, meaning in rows}


# -- the table ------------------------------------------------------------------------------------

def test_the_readme_table_lists_exactly_the_codes_of_errors_py():
    table = readme_table()
    assert sorted(table) == sorted(errors.EXIT_CODES) == [0, 1, 2, 3, 4, 5, 6]
    for code, cls in errors.EXIT_CODES.items():
        if cls is not None:
            assert cls.exit_code == code, cls


def test_every_error_class_exits_with_a_code_of_the_table():
    table = readme_table()
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.TrialwatchError)]
    assert len(classes) > 10
    for cls in classes:
        assert cls.exit_code in table, cls
        # Each class sits under the class the table names for its code (or is that class).
        assert issubclass(cls, errors.EXIT_CODES[cls.exit_code]) or cls.exit_code in (2, 4), cls


def test_trialwatch_help_lists_the_same_codes():
    listed = {int(m) for m in re.findall(r"^\s+(\d)\s+\S", HELP_EPILOG, flags=re.M)}
    assert listed == set(readme_table())


# -- each row, as a command returns it ------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def api(record):
    with StandIn([record(NCT), record("NCT03268603_EA")]) as server:
        yield server


@pytest.fixture
def cli(tmp_path, db_url, capsys, monkeypatch):
    """cli(config_text, *args) -> (code, stdout, stderr), with `database:` set."""
    monkeypatch.setattr(ctgov, "BACKOFF_BASE_S", 0.01)

    def run(config: str, *args: str):
        cfg = tmp_path / "config.yaml"
        cfg.write_text(f"database: {db_url}\n{config}", encoding="utf-8")
        code = main(["--config", str(cfg), *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def ctgov_at(base_url: str, retries: int = 1) -> str:
    return f"ctgov: {{base_url: '{base_url}', requests_per_minute: 60000, max_retries: {retries}, timeout_s: 5}}\n"


def test_0_ok(cli, api):
    code, out, err = cli(ctgov_at(api.base_url), "check", NCT)
    assert code == 0, err
    assert "First snapshot" in out


def recruiting(record) -> dict:
    changed = record(NCT)
    changed["protocolSection"]["statusModule"]["overallStatus"] = "RECRUITING"
    changed["protocolSection"]["statusModule"]["lastUpdatePostDateStruct"]["date"] = "2026-11-26"
    return changed


def test_1_a_bug_in_sending_is_exit_1_with_the_vv_hint_not_a_mail_error(cli, api, monkeypatch, db_url, record):
    import trialwatch.notify

    def broken(*a, **kw):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(trialwatch.notify, "send_pending", broken)
    monkeypatch.setenv("TRIALWATCH_SECRET_KEY", SECRET)
    config = ctgov_at(api.base_url) + f"trials: [{NCT}]\nsubscribers:\n  - email: a@example.org\n    trials: [{NCT}]\n"
    assert cli(config, "poll", "--no-send")[0] == 0
    api.put(recruiting(record))
    api.set_data_timestamp("2026-11-26T09:00:05")
    code, _, err = cli(config, "poll")
    assert code == 1, err
    assert "unexpected ZeroDivisionError: a bug" in err and "-vv" in err
    # The poll's row is finished all the same: what it stored is recorded.
    from trialwatch import store as st

    s = st.open_store(db_url)
    with s.session() as sess:
        last = sess.query(st.Poll).order_by(st.Poll.id.desc()).first()
        assert last.finished_at is not None and last.trials_changed == 1
    s.close()


def test_2_bad_usage_or_input(cli):
    code, _, err = cli("", "check", "NCT123X")
    assert code == 2 and "hint:" in err


def test_3_trial_not_found(cli, api):
    code, _, err = cli(ctgov_at(api.base_url), "check", "NCT09999999")
    assert code == 3, err


def test_4_api_unreachable_for_check(cli):
    code, _, err = cli(ctgov_at(f"http://127.0.0.1:{_free_port()}/api/v2"), "check", NCT)
    assert code == 4, err
    assert "ctgov.base_url" in err


def test_4_api_failing_during_a_poll(cli, api):
    api.fail_next("500", times=50)
    code, out, err = cli(ctgov_at(api.base_url) + f"trials: [{NCT}]\n", "poll", "--json")
    assert code == 4, err
    assert "the poll did not finish" in err
    assert json.loads(out)["complete"] is False


def test_5_database_problem_a_file_that_is_not_sqlite(tmp_path, capsys):
    bad = tmp_path / "notes.db"
    bad.write_text("these are notes, not a database " * 20)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"database: sqlite:///{bad}\n")
    for args in (["db", "status"], ["db", "upgrade"], ["subscribers"]):
        assert main(["--config", str(cfg), *args]) == 5, args
        err = capsys.readouterr().err
        assert "not a SQLite database" in err and "hint:" in err


def test_5_another_poll_holds_the_lock(cli, api, db_url):
    from trialwatch import store as st

    s = st.open_store(db_url)
    assert s.acquire_lock("poll", "elsewhere:1:1", ttl_s=600)
    s.close()
    code, _, err = cli(ctgov_at(api.base_url) + f"trials: [{NCT}]\n", "poll")
    assert code == 5 and "another poll holds the lock" in err


def test_5_a_poll_that_lost_its_lock(cli, api, monkeypatch):
    from trialwatch import poller
    from trialwatch.store import Store

    # Another poller took the lock: every renewal of ours finds it gone.
    monkeypatch.setattr(Store, "renew_lock", lambda self, name, holder, ttl_s: False)
    clock = iter(range(0, 10_000, 100))  # every checkpoint is past the renewal interval
    monkeypatch.setattr(poller.time, "monotonic", lambda: float(next(clock)))
    code, out, err = cli(ctgov_at(api.base_url) + f"trials: [{NCT}]\n", "poll", "--json")
    assert code == 5, err
    assert "lost the poll lock" in err
    assert json.loads(out)["complete"] is False


def test_6_mail_left_queued_with_smtp_down(cli, api, smtp_server, monkeypatch, record):  # noqa: F811
    monkeypatch.setenv("TRIALWATCH_SECRET_KEY", SECRET)
    config = (ctgov_at(api.base_url) + f"trials: [{NCT}]\n"
              f"email: {{transport: smtp, smtp: {smtp_server.config_yaml()}, retry_backoff_s: 0}}\n"
              f"subscribers:\n  - email: dr.neuro@example.org\n    trials: [{NCT}]\n    min_severity: minor\n")
    assert cli(config, "poll")[0] == 0
    api.put(recruiting(record))
    api.set_data_timestamp("2026-11-26T09:00:05")
    smtp_server.down()
    code, _, err = cli(config, "poll")
    assert code == 6, err
    assert "1 message(s) wait in the outbox" in err and "Connection refused" in err
    code, out, err = cli(config, "send")
    assert code == 6, err
    assert "1 message(s) wait in the outbox" in err
    smtp_server.up()
    code, _, err = cli(config, "send")
    assert code == 0, err
    assert len(smtp_server.messages) == 1


def test_2_a_config_file_that_is_not_utf8_names_the_file_and_line(tmp_path, capsys):
    cfg = tmp_path / "config.yaml"
    cfg.write_bytes(b"trials: [NCT03268603]\n# caf\xe9 \xff\n")
    assert main(["--config", str(cfg), "db", "status"]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}:2: not UTF-8 text" in err and "hint: Save the file as UTF-8" in err


def test_2_config_naming_a_folder_says_it_is_a_folder(tmp_path, capsys, monkeypatch):
    assert main(["--config", str(tmp_path), "db", "status"]) == 2
    err = capsys.readouterr().err
    assert "is a folder, not a file" in err and "does not exist" not in err
    monkeypatch.setenv("TRIALWATCH_CONFIG", str(tmp_path))
    assert main(["db", "status"]) == 2
    assert "is a folder, not a file" in capsys.readouterr().err


def test_2_preview_html_into_a_missing_folder(cli, api, tmp_path):
    config = ctgov_at(api.base_url) + f"trials: [{NCT}]\n"
    assert cli(config, "check", NCT)[0] == 0
    code, out, err = cli(config, "preview", NCT, "--html", str(tmp_path / "no-such-folder" / "digest.html"))
    assert code == 2, err
    assert "cannot write" in err and "existing, writable folder" in err


def test_2_serve_on_a_busy_port(cli, monkeypatch):
    monkeypatch.setenv("TRIALWATCH_SECRET_KEY", SECRET)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = cli("", "serve", "--port", str(port))
    assert code == 2, err
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in err and "--port" in err
