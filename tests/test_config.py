"""config.yaml is validated at start-up: errors name the key, the file and the line;
secrets never come from the file."""

from __future__ import annotations

import pytest

from trialwatch import config as cfg
from trialwatch.errors import ConfigError


def test_no_file_gives_the_embedded_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = cfg.load()
    assert c.source is None
    assert c.database_url == f"sqlite:///{tmp_path / 'trialwatch.db'}"
    assert c.email.transport == "file"


def test_the_repository_config_watches_the_als_trial():
    from pathlib import Path

    c = cfg.load(Path(__file__).resolve().parent.parent / "config.yaml")
    assert c.trials == ["NCT03268603"]


def test_trials_are_normalised():
    c = cfg.loads("trials: [nct3268603, ' NCT03268603 ', NCT00000102]")
    assert c.trials == ["NCT03268603", "NCT00000102"]


def test_bad_nct_in_the_file_names_the_key_and_line():
    with pytest.raises(ConfigError) as e:
        cfg.loads("database: sqlite:///x.db\ntrials:\n  - NCT03268603\n  - NCT123X\n", source="c.yaml")
    assert "c.yaml:4: trials.1:" in str(e.value) and "NCT123X" in str(e.value)


def test_unknown_key_names_the_file_and_line():
    text = "ctgov:\n  base_url: https://example.org/api/v2\n  request_per_minute: 10\n"
    with pytest.raises(ConfigError, match=r"c.yaml:3: unknown key 'ctgov.request_per_minute'"):
        cfg.loads(text, source="c.yaml")


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"c.yaml:2: ctgov.timeout_s"):
        cfg.loads("ctgov:\n  timeout_s: soon\n", source="c.yaml")


def test_a_password_in_the_file_is_refused_with_the_env_var_to_use():
    text = "email:\n  smtp:\n    host: mail\n    password: hunter2\n"
    with pytest.raises(ConfigError, match="TRIALWATCH_SMTP_PASSWORD"):
        cfg.loads(text, source="c.yaml")


def test_invalid_yaml_names_the_line():
    with pytest.raises(ConfigError, match=r"c.yaml:2: not valid YAML"):
        cfg.loads("trials: [NCT03268603\nfoo: : bar\n", source="c.yaml")


def test_subscriber_must_name_existing_searches():
    text = "subscribers:\n  - email: dr@example.org\n    searches: [nope]\n"
    with pytest.raises(ConfigError, match="names search 'nope'"):
        cfg.loads(text)


def test_subscriber_email_is_validated():
    with pytest.raises(ConfigError, match="subscribers.0.email"):
        cfg.loads("subscribers:\n  - email: not-an-address\n")


def test_search_query_parameters():
    c = cfg.loads("""
searches:
  - name: als-msc
    condition: amyotrophic lateral sclerosis
    intervention: mesenchymal
    status: [recruiting, NOT_YET_RECRUITING]
    near: {lat: 44.02, lon: -92.46, miles: 200}
""")
    assert c.searches[0].query_params() == {
        "query.cond": "amyotrophic lateral sclerosis", "query.intr": "mesenchymal",
        "filter.overallStatus": "RECRUITING,NOT_YET_RECRUITING",
        "filter.geo": "distance(44.02,-92.46,200mi)"}


def test_database_url_from_environment_wins(monkeypatch):
    monkeypatch.setenv("TRIALWATCH_DATABASE_URL", "postgresql+psycopg://u:secret@db/tw")
    assert cfg.loads("database: sqlite:///x.db").database_url == "postgresql+psycopg://u:secret@db/tw"


def test_relative_sqlite_path_resolves_against_the_config_file(tmp_path):
    p = tmp_path / "etc" / "config.yaml"
    p.parent.mkdir()
    p.write_text("database: sqlite:///data/tw.db\n")
    assert cfg.load(p).database_url == f"sqlite:///{tmp_path / 'etc' / 'data' / 'tw.db'}"


def test_config_path_resolution_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text("trials: [NCT00000001]\n")
    env = tmp_path / "env.yaml"
    env.write_text("trials: [NCT00000002]\n")
    assert cfg.load().trials == ["NCT00000001"]
    monkeypatch.setenv("TRIALWATCH_CONFIG", str(env))
    assert cfg.load().trials == ["NCT00000002"]
    explicit = tmp_path / "x.yaml"
    explicit.write_text("trials: [NCT00000003]\n")
    assert cfg.load(explicit).trials == ["NCT00000003"]
    with pytest.raises(ConfigError, match="does not exist"):
        cfg.load(tmp_path / "missing.yaml")


def test_secret_key_is_required_only_when_asked(monkeypatch):
    c = cfg.loads("")
    with pytest.raises(ConfigError, match="TRIALWATCH_SECRET_KEY is not set"):
        c.secret_key()
    monkeypatch.setenv("TRIALWATCH_SECRET_KEY", "k" * 32)
    assert c.secret_key() == "k" * 32


def test_a_key_given_twice_is_an_error_naming_both_lines():
    # PyYAML keeps the last value silently: a second 'trials:' would drop the first list of
    # watched trials without a word. Refused instead, at any depth.
    text = "trials: [NCT03268603]\ndatabase: sqlite:///x.db\ntrials: [NCT00000102]\n"
    with pytest.raises(ConfigError, match=r"c.yaml:3: key 'trials' is given twice \(first on line 1\)"):
        cfg.loads(text, source="c.yaml")
    with pytest.raises(ConfigError, match=r"c.yaml:3: key 'ctgov.timeout_s' is given twice"):
        cfg.loads("ctgov:\n  timeout_s: 5\n  timeout_s: 10\n", source="c.yaml")


def test_yaml_aliases_and_merge_keys_are_refused_naming_the_line():
    # An alias is how a 1 KB file becomes gigabytes (below); a config has no need of one.
    text = ("subscribers:\n  - &s {email: a@example.org, trials: [NCT03268603]}\n"
            "  - {<<: *s, email: b@example.org}\n")
    with pytest.raises(ConfigError, match=r"c.yaml:3: YAML aliases \(\*name\) are not allowed; "
                                          r"the value anchored on line 2"):
        cfg.loads(text, source="c.yaml")
    with pytest.raises(ConfigError, match=r"c.yaml:2: YAML aliases"):
        cfg.loads("trials: &t [NCT03268603]\nignore: *t\n", source="c.yaml")
    # An anchor nobody refers to expands nothing, and is harmless.
    assert cfg.loads("trials: &t [NCT03268603]\n").trials == ["NCT03268603"]


def test_a_yaml_alias_bomb_is_refused_before_it_expands():
    # Nine levels of nine aliases each: 387 million strings once expanded (the 1.68 GB of the
    # fault report). Refused at the first alias, having expanded nothing.
    lines = ['  l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    text = "trials: []\nsearches:\n" + "\n".join(lines) + "\n"
    with pytest.raises(ConfigError, match=r"bomb.yaml:\d+: YAML aliases"):
        cfg.loads(text, source="bomb.yaml")


@pytest.mark.parametrize("schedule", ["61 10 * * *", "30 25 * * *", "30 10 * * mon-xyz"])
def test_an_impossible_cron_schedule_is_a_config_error(schedule):
    with pytest.raises(ConfigError, match=r"c.yaml:1: schedule:"):
        cfg.loads(f"schedule: '{schedule}'\n", source="c.yaml")
