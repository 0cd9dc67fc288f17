"""Ready to refer: nearest open sites and record warnings, on real multi-site records.

Distances are checked against an independent computation in this file (the angle between two
unit vectors, not the haversine formula), from the records' own geoPoints.
"""

from __future__ import annotations

import datetime as dt
import math

import pytest

from trialwatch.places import Place
from trialwatch.referral import OPEN_SITE_STATUSES, nearest_sites, site_line, warnings

PS = "protocolSection"
R_KM = 6371.0088


def independent_km(lat1, lon1, lat2, lon2):
    def unit(lat, lon):
        la, lo = math.radians(lat), math.radians(lon)
        return (math.cos(la) * math.cos(lo), math.cos(la) * math.sin(lo), math.sin(la))

    a, b = unit(lat1, lon1), unit(lat2, lon2)
    cross = (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])
    return R_KM * math.atan2(math.sqrt(sum(c * c for c in cross)), sum(x * y for x, y in zip(a, b)))


def locations(rec):
    return rec[PS]["contactsLocationsModule"]["locations"]


ROCHESTER_MN = Place(44.02163, -92.4699, "Rochester, MN", "Rochester, MN")


def test_nearest_open_sites_of_a_1148_site_trial_match_an_independent_ranking(record):
    rec = record("NCT04267848")
    near = nearest_sites(rec, ROCHESTER_MN, limit=5)
    # The same answer computed here from the raw locations.
    expected = sorted(
        ((independent_km(ROCHESTER_MN.lat, ROCHESTER_MN.lon, loc["geoPoint"]["lat"], loc["geoPoint"]["lon"]),
          loc["facility"]) for loc in locations(rec)
         if loc.get("status") in OPEN_SITE_STATUSES and loc.get("geoPoint")))
    assert [s.facility for s in near.sites] == [f for _, f in expected[:5]]
    for site, (km, _) in zip(near.sites, expected):
        assert site.distance_km == pytest.approx(km, abs=1e-6)
        assert site.distance_miles == pytest.approx(km / 1.609344, abs=1e-6)
        assert site.status in OPEN_SITE_STATUSES
    assert near.open_sites == sum(loc.get("status") in OPEN_SITE_STATUSES for loc in locations(rec)) == 659
    assert near.unranked == sum(loc.get("status") in OPEN_SITE_STATUSES and not loc.get("geoPoint")
                                for loc in locations(rec))
    assert near.unranked > 0 and "not ranked" in near.summary()


def test_a_site_that_does_not_recruit_is_never_offered_even_when_it_is_closest(record):
    rec = record("NCT04267848")
    suspended = next(loc for loc in locations(rec) if loc.get("status") == "SUSPENDED")
    here = Place(suspended["geoPoint"]["lat"], suspended["geoPoint"]["lon"], "there", "there")
    near = nearest_sites(rec, here, limit=1000)
    assert len(near.sites) == 659 - near.unranked
    assert all(s.status in OPEN_SITE_STATUSES for s in near.sites)
    assert suspended["facility"] not in {s.facility for s in near.sites if s.distance_km == 0}


def test_limit_and_order_with_ties_broken_by_facility(record):
    rec = record("NCT04267848")
    near = nearest_sites(rec, ROCHESTER_MN, limit=40)
    assert len(near.sites) == 40
    keys = [(s.distance_km, s.facility) for s in near.sites]
    assert keys == sorted(keys)
    assert len(nearest_sites(rec, ROCHESTER_MN, limit=2).sites) == 2


def test_site_contacts_else_the_central_contact(record):
    rec = record("NCT03475563")   # sites name a doctor without phone or email; central has both
    barcelona = Place(41.38879, 2.15899, "Barcelona, Spain", "Barcelona, Spain")
    near = nearest_sites(rec, barcelona)
    first = near.sites[0]
    assert first.facility == "Hospital Universitari Vall d'Hebron" and first.distance_km == 0
    assert first.contacts_from == "central"
    assert first.contacts[0].phone == rec[PS]["contactsLocationsModule"]["centralContacts"][0]["phone"]
    assert "(central contact)" in site_line(first)

    rec = record("NCT04267848")
    first = nearest_sites(rec, ROCHESTER_MN).sites[0]
    own = next(loc for loc in locations(rec) if loc["facility"] == first.facility and loc.get("status") in OPEN_SITE_STATUSES)
    assert first.contacts_from == "site"
    assert [c.phone for c in first.contacts] == [c.get("phone") for c in own["contacts"]]
    assert first.to_dict().keys() >= {"facility", "city", "state", "country", "status", "distance_km",
                                      "distance_miles", "contacts"}


def test_a_trial_recruiting_nowhere_says_so(record):
    near = nearest_sites(record("NCT00763412"), ROCHESTER_MN)
    assert near.sites == [] and near.open_sites == 0
    assert near.summary() == "no site is open to referrals (overall status: Completed)"


def test_recruiting_trial_whose_sites_list_no_status_sends_her_to_the_study_contact(record):
    rec = record("NCT03268603")
    rec[PS]["statusModule"]["overallStatus"] = "RECRUITING"
    near = nearest_sites(rec, ROCHESTER_MN)
    assert near.sites == [] and near.without_status == 1
    assert "ask the study contact" in near.summary()


def test_a_site_with_a_broken_geopoint_is_unranked_not_a_crash(record):
    rec = record("NCT03281889")
    locations(rec)[0]["geoPoint"] = {"lat": "north", "lon": None}
    near = nearest_sites(rec, ROCHESTER_MN)
    assert (near.open_sites, near.unranked, len(near.sites)) == (2, 1, 1)


# -- warnings ---------------------------------------------------------------------------------

def kinds(ws):
    return [w.kind for w in ws]


def test_a_recruiting_record_verified_in_2021_with_a_2022_completion_is_flagged(record):
    rec = record("NCT03281889")
    sm = rec[PS]["statusModule"]
    assert (sm["overallStatus"], sm["statusVerifiedDate"], sm["primaryCompletionDateStruct"]["date"]) == \
        ("RECRUITING", "2021-01", "2022-03-31")
    ws = warnings(rec, dt.date(2026, 11, 29))
    assert kinds(ws) == ["stale", "past_completion"]
    assert "2021-01" in ws[0].text and "70 months" in ws[0].text
    assert "2022-03-31" in ws[1].text
    # The same record, read while it was fresh, warns of nothing.
    assert warnings(rec, dt.date(2021, 6, 1)) == []


@pytest.mark.parametrize("today, stale", [
    (dt.date(2022, 1, 31), False),    # verified "2021-01" may mean 2021-01-31: 12 months later
    (dt.date(2022, 2, 1), True),
])
def test_stale_is_more_than_twelve_months_after_the_verification_month(record, today, stale):
    assert ("stale" in kinds(warnings(record("NCT03281889"), today))) is stale


@pytest.mark.parametrize("today, passed", [(dt.date(2022, 3, 31), False), (dt.date(2022, 4, 1), True)])
def test_past_completion_counts_from_the_day_after_the_date(record, today, passed):
    assert ("past_completion" in kinds(warnings(record("NCT03281889"), today))) is passed


def test_closed_trials_are_not_stale_and_results_are_announced(record):
    rec = record("NCT00763412")          # completed, verified 2017, results posted
    ws = warnings(rec, dt.date(2026, 11, 29))
    assert kinds(ws) == ["results_posted"]
    assert rec[PS]["statusModule"]["resultsFirstPostDateStruct"]["date"] in ws[0].text


def test_active_not_recruiting_can_be_stale_but_not_past_completion(record):
    rec = record("NCT02513394")          # ACTIVE_NOT_RECRUITING, verified 2023-04, completion 2020-11
    assert kinds(warnings(rec, dt.date(2026, 11, 29))) == ["stale", "results_posted"]


def test_month_only_completion_date_passes_after_that_month(record):
    rec = record("NCT03281889")
    rec[PS]["statusModule"]["primaryCompletionDateStruct"] = {"date": "2026-11", "type": "ESTIMATED"}
    assert "past_completion" not in kinds(warnings(rec, dt.date(2026, 11, 30)))
    assert "past_completion" in kinds(warnings(rec, dt.date(2026, 12, 1)))


def test_warnings_never_crash_on_partial_dates(record):
    rec = record("NCT03281889")
    rec[PS]["statusModule"]["statusVerifiedDate"] = "someday"
    rec[PS]["statusModule"]["primaryCompletionDateStruct"] = "2022"
    assert warnings(rec, dt.date(2026, 11, 29)) == []


def test_referral_reads_no_clock(record, monkeypatch):
    """Invariant: today is an argument; a clock read would raise here."""
    import types

    from trialwatch import referral

    class NoClock(dt.date):
        @classmethod
        def today(cls):
            raise AssertionError("referral read the clock")

    class NoNow:
        def __getattr__(self, name):
            raise AssertionError("referral read the clock")

    monkeypatch.setattr(referral, "dt", types.SimpleNamespace(date=NoClock, datetime=NoNow()))
    rec = record("NCT03281889")
    assert kinds(warnings(rec, dt.date(2026, 11, 29))) == ["stale", "past_completion"]
    assert nearest_sites(rec, ROCHESTER_MN).open_sites == 2
