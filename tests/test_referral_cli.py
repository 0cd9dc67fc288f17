"""`trialwatch check --near PLACE`, warnings and eligibility, end to end: the real CLI against
the local stand-in serving real records, computed answers checked from the records themselves."""

from __future__ import annotations

import json

import pytest

from trialwatch.referral import OPEN_SITE_STATUSES

from standin import StandIn
from test_referral import independent_km
from conftest import cli_against

PS = "protocolSection"
BIG = "NCT04267848"       # 1,148 sites: 659 recruiting, 393 suspended, 96 active, no central contact
STALE = "NCT03281889"     # "Recruiting", verified 2021-01, primary completion 2022-03-31


@pytest.fixture
def api(record):
    with StandIn([record(BIG), record(STALE), record("NCT00763412")]) as server:
        yield server


@pytest.fixture
def run(api, db_url, tmp_path, capsys, monkeypatch):
    return cli_against(api.base_url, db_url, tmp_path, capsys, monkeypatch)


def check_json(run, *args):
    code, out, err = run("check", *args, "--json")
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def open_sites_by_distance(rec, lat, lon):
    """(km, index, location) of every open site with a geoPoint, nearest first."""
    ranked = [(independent_km(lat, lon, loc["geoPoint"]["lat"], loc["geoPoint"]["lon"]), i, loc)
              for i, loc in enumerate(rec[PS]["contactsLocationsModule"]["locations"])
              if loc.get("status") in OPEN_SITE_STATUSES and loc.get("geoPoint")]
    return sorted(ranked, key=lambda t: (t[0], t[2]["facility"]))


def test_check_near_lists_the_five_nearest_open_sites_with_distances(run, record):
    (obj,) = check_json(run, BIG, "--near", "44.02,-92.47")
    expected = open_sites_by_distance(record(BIG), 44.02, -92.47)[:5]
    sites = obj["nearest_sites"]
    assert [s["facility"] for s in sites] == [loc["facility"] for _, _, loc in expected]
    for s, (km, _, loc) in zip(sites, expected):
        assert set(s) >= {"facility", "city", "state", "country", "status", "distance_km",
                          "distance_miles", "contacts"}
        assert s["distance_km"] == pytest.approx(km, abs=0.051)
        assert s["distance_miles"] == pytest.approx(km / 1.609344, abs=0.051)
        assert (s["city"], s["state"], s["country"], s["status"]) == \
            (loc["city"], loc.get("state"), loc["country"], loc["status"])
        assert [c["phone"] for c in s["contacts"]] == [c.get("phone") for c in loc["contacts"]]
    assert obj["near"]["open_sites"] == 659 and obj["near"]["unranked"] >= 1


def test_limit_sets_how_many_and_without_a_place_there_is_no_nearest_sites_key(run):
    (obj,) = check_json(run, BIG, "--near", "Rochester, MN", "--limit", "12")
    assert len(obj["nearest_sites"]) == 12 and obj["near"]["place"] == "Rochester, MN, United States"
    (obj,) = check_json(run, BIG)
    assert "nearest_sites" not in obj and "near" not in obj


def test_terminal_names_the_nearest_open_site_and_its_contact_in_one_line(run, record):
    code, out, err = run("check", BIG, "--near", "55905")
    assert code == 0, err
    from trialwatch.places import resolve

    p = resolve("55905")
    km, _, loc = open_sites_by_distance(record(BIG), p.lat, p.lon)[0]
    contact = loc["contacts"][0]
    [line] = [ln for ln in out.splitlines() if ln.strip().startswith("Nearest open site:")]
    assert loc["facility"] in line and loc["city"] in line
    assert f"{km:.0f} km / {km / 1.609344:.0f} mi" in line
    assert contact["phone"] in line
    assert "Open sites nearest to ZIP 55905 (Rochester, MN)" in out
    assert "without coordinates on the record, not ranked" in out


def test_the_contact_line_never_shows_a_site_that_does_not_recruit(run, api, record):
    # The registry suspends a site and leaves its contacts on the record: the first site with a
    # contact is now one a patient cannot be sent to.
    rec = record(BIG)
    locs = rec[PS]["contactsLocationsModule"]["locations"]
    first = next(loc for loc in locs if any(c.get("phone") for c in loc.get("contacts", [])))
    first["status"] = "SUSPENDED"
    suspended_phone = first["contacts"][0]["phone"]
    assert not any(c.get("phone") == suspended_phone for loc in locs if loc is not first
                   for c in loc.get("contacts", []))
    api.put(rec)
    code, out, _ = run("check", BIG)
    [contact] = [ln for ln in out.splitlines() if ln.strip().startswith("Contact:")]
    assert suspended_phone not in out
    assert "investigator; no central contact listed" in contact     # the record names one
    assert "--near PLACE" in out
    # With a place: the nearest open site's contact, even when the suspended site is nearer.
    here = f"{first['geoPoint']['lat']},{first['geoPoint']['lon']}"
    code, out, _ = run("check", BIG, "--near", here)
    _, _, nearest = open_sites_by_distance(rec, first["geoPoint"]["lat"], first["geoPoint"]["lon"])[0]
    [contact] = [ln for ln in out.splitlines() if ln.strip().startswith("Contact:")]
    assert nearest["contacts"][0]["phone"] in contact and nearest["facility"] in contact
    assert suspended_phone not in out


def test_a_trial_recruiting_nowhere_says_so(run):
    code, out, _ = run("check", "NCT00763412", "--near", "Rochester, MN")
    assert code == 0
    assert "Nearest open site:  none: no site is open to referrals (overall status: Completed)" in out
    (obj,) = check_json(run, "NCT00763412", "--near", "Rochester, MN")
    assert obj["nearest_sites"] == []


def test_stale_record_warnings_in_json_and_terminal(run):
    (obj,) = check_json(run, STALE)
    kinds = [w["kind"] for w in obj["warnings"]]
    assert kinds == ["stale", "past_completion"]
    code, out, _ = run("check", STALE)
    warning_lines = [ln for ln in out.splitlines() if ln.strip().startswith("Warning:")]
    assert len(warning_lines) == 2
    assert "2021-01" in warning_lines[0] and "2022-03-31" in warning_lines[1]
    # Right under the status, before anything else a physician reads.
    lines = out.splitlines()
    assert lines[1].strip().startswith("Status:") and lines[2] == warning_lines[0]


def test_eligibility_in_json_and_at_a_glance(run, record):
    (obj,) = check_json(run, STALE)
    e = obj["eligibility"]
    assert set(e) >= {"inclusion", "exclusion", "sex", "minimum_age", "maximum_age", "healthy_volunteers"}
    assert (e["sex"], e["minimum_age"], e["maximum_age"], e["healthy_volunteers"]) == ("ALL", "3 Years", "18 Years", False)
    assert len(e["inclusion"]) == 5 and len(e["exclusion"]) == 5
    assert e["exclusion"][0] == "Any prior therapeutic radiation therapy > 500 cGy has been delivered."
    code, out, _ = run("check", STALE)
    assert "Eligibility:        3 Years to 18 Years · all sexes · no healthy volunteers" in out
    assert "Criteria:           5 inclusion, 5 exclusion (--eligibility lists them)" in out
    code, out, _ = run("check", STALE, "--eligibility")
    assert "Exclusion criteria (5):" in out
    assert "   1. Any prior therapeutic radiation therapy > 500 cGy has been delivered." in out


@pytest.mark.parametrize("args, says", [
    (("--near", "Springfield"), "ambiguous"),
    (("--near", "Nowhere, Atlantis"), "neither a US state nor a country"),
    (("--limit", "3"), "needs --near"),
    (("--near", "55905", "--limit", "0"), "0"),
])
def test_a_bad_place_or_limit_is_a_usage_error_before_any_request(run, api, args, says):
    code, out, err = run("check", BIG, *args)
    assert code == 2 and out == ""
    assert says in err
    assert api.requests == []
