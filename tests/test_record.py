"""record: reading a real v2 study record (canonical form, words, the ten-second summary)."""

from __future__ import annotations

import copy
import json

import pytest
from corpus import corpus_file, record_params, record_path

from trialwatch import record
from trialwatch.errors import InvalidNctId

RECORDS = record_params()


def load(nct: str) -> dict:
    return json.loads(record_path(nct).read_text(encoding="utf-8"))


@pytest.mark.corpus
def test_the_real_records_are_there():
    assert len(RECORDS) >= 15


# --- NCT numbers, canonical form -----------------------------------------------------------

@pytest.mark.parametrize("raw", [" nct3268603 ", "NCT03268603", "nct0003268603"])
def test_nct_numbers_normalise(raw):
    assert record.normalize_nct(raw) == "NCT03268603"


@pytest.mark.parametrize("raw", ["NCT", "NCT123456789", "03268603", "NCT0326860X", None])
def test_non_nct_numbers_raise(raw):
    with pytest.raises(InvalidNctId):
        record.normalize_nct(raw)


@pytest.mark.parametrize("raw", ["NCT0326860\uff13", "NCT1\u0662\u0663", "NCT\u0660\u0663268603"])
def test_nct_numbers_with_non_ascii_digits_raise(raw):
    with pytest.raises(InvalidNctId):
        record.normalize_nct(raw)


def test_noise_pair_has_one_content_hash():
    a, b = (json.loads(p.read_text()) for p in sorted(corpus_file("records/snapshots").glob("NCT02552212.snapshot_*.json")))
    assert a != b
    assert record.content_hash(a) == record.content_hash(b)


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: p.stem)
def test_canonical_leaves_its_input_alone_and_shares_nothing_with_it(path):
    raw = json.loads(path.read_text())
    before = copy.deepcopy(raw)
    canon = record.canonical(raw)
    assert raw == before
    assert "derivedSection" not in canon
    canon["protocolSection"]["identificationModule"]["nctId"] = "X"
    assert raw == before


def reference_canonical(node, path=""):  # noqa: ANN001, ANN201
    """The canonical form as it was first written (dotted path strings, every node copied):
    the definition every stored content hash was made with. Kept here so a faster form can
    never drift from it: a drift would be a false change for every stored trial."""
    if isinstance(node, dict):
        return {k: reference_canonical(v, f"{path}.{k}" if path else k) for k, v in node.items()
                if (f"{path}.{k}" if path else k) not in record.CHURN_PATHS}
    if isinstance(node, list):
        items = [reference_canonical(v, path) for v in node]
        key = lambda x: json.dumps(x, sort_keys=True, ensure_ascii=False)  # noqa: E731
        return sorted(items, key=key) if path in record.UNORDERED_LISTS else items
    return node


def reference_bytes(r: dict) -> bytes:
    return json.dumps(r, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: p.stem)
def test_the_canonical_view_is_the_canonical_form_byte_for_byte_and_copies_nothing_it_keeps(path):
    raw = json.loads(path.read_text())
    before = copy.deepcopy(raw)
    view = record.canonical_view(raw)
    want = reference_bytes(reference_canonical(raw))
    assert record.canonical_json(view) == record.canonical_json(record.canonical(raw)) == want
    assert raw == before
    # What the canonical form leaves alone is the record's own object: no copy to make.
    assert view["protocolSection"]["descriptionModule"] is raw["protocolSection"]["descriptionModule"]
    assert view["protocolSection"]["statusModule"] is not raw["protocolSection"]["statusModule"]  # churn dropped


def crafted() -> list[dict]:
    """Shapes no real record has, where a tree of paths could part from the joined strings:
    keys holding dots or empty, lists of lists and of mixed items at a sorted path, strings
    that sort differently once JSON-escaped (a quote, a backslash, a control character, a
    prefix of another)."""
    r = {"protocolSection": {"identificationModule": {"nctId": "NCT04267848"},
                             "statusModule": {"overallStatus": "RECRUITING",
                                              "lastUpdatePostDateStruct": {"date": "2026-01-15"}},
                             "descriptionModule": {"briefSummary": "kept as it is"}},
         "derivedSection": {"miscInfoModule": {}}}
    ps = r["protocolSection"]
    ps.setdefault("conditionsModule", {})["conditions"] = [
        "Cancer Pain", "Cancer", 'Cancer "B"', "Cancer\\x", "Cancer\n", "cancer", "Éa", 3, None, ["b", "a"],
        {"z": 1, "a": [2, 1]}]
    ps["conditionsModule"]["keywords"] = [["z", "a"], ["c", ["y", "x"]]]
    ps["statusModule.lastUpdateSubmitDate"] = "dropped at the joined path"
    ps["statusModule"]["lastUpdateSubmitDate"] = "2026-01-01"
    ps["contactsLocationsModule.locations"] = [{"city": "B"}, {"city": "A", "contacts": [{"n": 2}, {"n": 1}]}]
    ps[""] = {"conditionsModule": {"conditions": ["b", "a"]}}
    r[""] = {"derivedSection": 1, "protocolSection": {"conditionsModule": {"conditions": ["b", "a"]}}}
    r["protocolSection.designModule"] = {"phases": ["PHASE3", "PHASE1"]}
    r["protocolSection"]["designModule"] = [{"phases": ["PHASE2", "PHASE1"]}, "x"]
    r["resultsSection"] = {"protocolSection": {"conditionsModule": {"conditions": ["b", "a"]}}}
    return [r, {"": {"": {"derivedSection": 1}}, ".": [], "a.": {"b": 1}}]


@pytest.mark.parametrize("raw", crafted(), ids=["record", "keys"])
def test_crafted_shapes_keep_the_canonical_form_they_always_had(raw):
    want = reference_bytes(reference_canonical(raw))
    assert record.canonical_json(record.canonical(raw)) == want
    assert record.canonical_json(record.canonical_view(raw)) == want


def test_get_walks_dotted_paths_and_defaults():
    r = load("NCT04267848")
    assert record.get(r, "protocolSection.statusModule.overallStatus") == "RECRUITING"
    assert record.get(r, "protocolSection.nope.overallStatus", "—") == "—"
    assert record.get(None, "a.b") is None


# --- words ---------------------------------------------------------------------------------

@pytest.mark.parametrize("value,text", [
    ("ACTIVE_NOT_RECRUITING", "Active, not recruiting"),
    ("PHASE2", "Phase 2"),
    (["PHASE2", "PHASE3"], "Phase 2, Phase 3"),
    (None, "—"),
    (True, "yes"),
    ("NCT03559686", "NCT03559686"),                 # an NCT number is not an enum
    ({"date": "2026-12", "type": "ESTIMATED"}, "2026-12 (estimated)"),
    ({"date": "2010-05"}, "2010-05"),                # startDateStruct may lack a type
    ({"count": 75, "type": "ACTUAL"}, "75 (actual)"),
    ({"hasExpandedAccess": True, "nctId": "NCT03559686", "statusForNctId": "AVAILABLE"},
     "has expanded access: yes, NCT03559686, Available"),
    ([{"name": "A B", "role": "CONTACT"}, {"name": "C D", "phone": "1"}], "A B, Contact; C D, 1"),
])
def test_words_renders_stored_values_for_people(value, text):
    assert record.words(value) == text


# --- summary -------------------------------------------------------------------------------

@pytest.mark.parametrize("path", RECORDS, ids=lambda p: p.stem)
def test_summary_reads_every_real_record_raw_and_canonical(path):
    raw = json.loads(path.read_text())
    for r in (raw, record.canonical(raw)):
        s = record.summary(r)
        json.dumps(s.to_dict())                       # JSON-able all the way down
        assert s.nct_id == path.stem
        assert s.url == f"https://clinicaltrials.gov/study/{path.stem}"
        assert s.title and s.status
        assert sum(s.sites_by_status.values()) == len(s.sites)


def test_summary_of_a_terminated_trial_gives_the_reason():
    s = record.summary(load("NCT00184067"))
    assert (s.status, s.status_words) == ("TERMINATED", "Terminated")
    assert s.why_stopped == "Primary PI left institution"


def test_summary_counts_sites_by_their_own_status():
    s = record.summary(load("NCT04267848"))
    assert len(s.sites) == 1148
    assert s.sites_by_status == {"RECRUITING": 659, "SUSPENDED": 393, "ACTIVE_NOT_RECRUITING": 96}
    katmai = next(site for site in s.sites if site.facility == "Katmai Oncology Group")
    assert (katmai.city, katmai.state, katmai.country, katmai.status) == (
        "Anchorage", "Alaska", "United States", "RECRUITING")
    assert (s.enrollment_count, s.enrollment_type, s.phases) == (1210, "ESTIMATED", ["PHASE3"])
    assert (s.primary_completion_date, s.primary_completion_date_type) == ("2025-12-15", "ESTIMATED")
    assert s.primary_outcomes[0].measure == "Disease free survival (DFS)"
    assert s.overall_officials[0].name == "Jacob M Sands"
    assert s.last_update_posted == "2025-09-10"
    # The canonical form drops last-update dates, so a stored snapshot cannot give one.
    assert record.summary(record.canonical(load("NCT04267848"))).last_update_posted is None


def test_summary_counts_sites_without_status_as_unspecified():
    s = record.summary(load("NCT02210780"))       # 42 sites, no facility names, no site status
    assert s.sites_by_status == {"UNSPECIFIED": 42}
    assert all(site.facility is None and site.city for site in s.sites)


def test_summary_of_a_trial_with_status_unknown_keeps_the_last_known_one():
    s = record.summary(load("NCT03475563"))
    assert (s.status, s.last_known_status) == ("UNKNOWN", "RECRUITING")
    assert s.central_contacts[0].email == "iotaegui@vhebron.net"
    assert s.sites[0].contacts[0].name == "Eduard Bosch, MD"


def test_summary_of_a_withdrawn_trial():
    s = record.summary(load("NCT00973089"))
    assert s.status == "WITHDRAWN"
    assert (s.enrollment_count, s.enrollment_type) == (0, "ACTUAL")
    assert (s.start_date, s.start_date_type) == ("2010-05", None)


def test_summary_expanded_access_results_and_eligibility():
    s = record.summary(load("NCT02552212"))
    assert s.expanded_access == record.ExpandedAccess(True, "NCT03559686", "AVAILABLE")
    assert (s.has_results, s.results_first_posted) == (True, "2020-08-17")
    p = record.summary(load("NCT04267848"))
    assert p.expanded_access.has_expanded_access is False
    assert p.eligibility.minimum_age == "18 Years" and p.eligibility.criteria.startswith("Inclusion")
    assert p.has_results is False and p.results_first_posted is None


def test_summary_of_a_skeleton_record_does_not_crash():
    s = record.summary({"protocolSection": {"identificationModule": {"nctId": "NCT00000001"}}})
    assert s.nct_id == "NCT00000001"
    assert (s.sites, s.sites_by_status, s.phases, s.expanded_access) == ([], {}, [], None)
    assert s.status_words == "—"
    assert record.summary({}).url is None


def test_summary_of_wrong_typed_eligibility_and_site_status_does_not_crash():
    r = copy.deepcopy(load("NCT04267848"))
    r["protocolSection"]["eligibilityModule"] = 5
    locs = r["protocolSection"]["contactsLocationsModule"]["locations"]
    locs[0]["status"], locs[1]["status"] = 5, ["RECRUITING"]
    s = record.summary(r)
    assert s.eligibility.criteria is None
    assert s.sites_by_status[record.UNSPECIFIED] == 2
