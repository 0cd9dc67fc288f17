"""diff(old, new): what a physician is told changed, built from edited copies of real v2 records."""

from __future__ import annotations

import copy
import datetime
import json
import random
import socket
import time

import pytest
from corpus import corpus_file, record_params, record_path

from trialwatch import diff as diff_module
from trialwatch import diff_sites, diff_util, events
from trialwatch import record
from trialwatch.diff import SEVERITY_RANK, Change, diff

RECORDS = record_params()

PS = "protocolSection"


def load(nct: str) -> dict:
    return json.loads(record_path(nct).read_text(encoding="utf-8"))


def edit(rec: dict, path: str, value) -> dict:
    """A copy of rec with the dotted path set (None deletes it)."""
    out = copy.deepcopy(rec)
    *parents, last = path.split(".")
    node = out
    for p in parents:
        node = node.setdefault(p, {})
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value
    return out


def fields(changes: list[Change]) -> list[str]:
    return [c.field for c in changes]


def shuffled(node, rng: random.Random):
    """Same content, every dict's key order shuffled."""
    if isinstance(node, dict):
        keys = list(node)
        rng.shuffle(keys)
        return {k: shuffled(node[k], rng) for k in keys}
    if isinstance(node, list):
        return [shuffled(v, rng) for v in node]
    return node


def reverse_at(node, parts: list[str]) -> None:
    """Reverse the list at a dotted path (list indexes omitted), in place."""
    if isinstance(node, list):
        for item in node:
            reverse_at(item, parts)
    elif isinstance(node, dict) and parts and parts[0] in node:
        if len(parts) == 1 and isinstance(node[parts[0]], list):
            node[parts[0]].reverse()
        else:
            reverse_at(node[parts[0]], parts[1:])


@pytest.mark.corpus
def test_the_real_records_are_there():
    # Every test below reads them; an empty glob must not pass quietly.
    assert len(RECORDS) >= 15


# --- churn is not a change -------------------------------------------------------------------

def test_noise_pair_differing_only_in_derived_section_is_no_change():
    a, b = (json.loads(p.read_text()) for p in sorted(corpus_file("records/snapshots").glob("NCT02552212.snapshot_*.json")))
    assert a["derivedSection"] != b["derivedSection"]
    assert diff(a, b) == []


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: p.stem)
def test_a_record_against_its_own_churn_is_no_change(path):
    raw = json.loads(path.read_text())
    churned = shuffled(raw, random.Random(path.stem))
    for lst in record.UNORDERED_LISTS:
        reverse_at(churned, lst.split("."))
    churned.pop("derivedSection", None)
    churned[PS]["statusModule"]["lastUpdateSubmitDate"] = "2099-01-01"
    churned[PS]["statusModule"]["lastUpdatePostDateStruct"] = {"date": "2099-01-02", "type": "ACTUAL"}
    assert diff(raw, churned) == []
    assert diff(churned, raw) == []
    # Raw and stored (canonical) forms compare equal too: the store diffs a blob against a fetch.
    assert diff(record.canonical(raw), churned) == []


# --- overall status ----------------------------------------------------------------------------

def test_history_status_sequence_yields_exactly_those_status_changes_in_order():
    steps = json.loads(corpus_file("history/NCT03690141.history_true_excerpt.json").read_text())["history"]["changes"]
    statuses = [s["status"] for s in steps]
    assert statuses[0] == "NOT_YET_RECRUITING" and statuses[-1] == "COMPLETED"
    base = load("NCT06171568")
    versions = [edit(base, f"{PS}.statusModule.overallStatus", s) for s in statuses]
    seen = []
    for old, new in zip(versions, versions[1:]):
        for c in diff(old, new):
            seen.append((c.field, c.old, c.new, c.severity))
    assert seen == [
        ("overall_status", "NOT_YET_RECRUITING", "RECRUITING", "important"),
        ("overall_status", "RECRUITING", "ACTIVE_NOT_RECRUITING", "important"),
        ("overall_status", "ACTIVE_NOT_RECRUITING", "COMPLETED", "important"),
    ]


@pytest.mark.parametrize("stopped", ["SUSPENDED", "TERMINATED", "WITHDRAWN"])
def test_a_trial_stopping_is_critical(stopped):
    old = load("NCT04267848")
    new = edit(old, f"{PS}.statusModule.overallStatus", stopped)
    assert diff(old, new) == [Change("overall_status", "Overall status", "RECRUITING", stopped, "critical")]


def test_a_stop_reason_appearing_is_critical_and_rewording_it_important():
    stopped = load("NCT00184067")
    assert stopped[PS]["statusModule"]["whyStopped"] == "Primary PI left institution"
    before = edit(stopped, f"{PS}.statusModule.whyStopped", None)
    before = edit(before, f"{PS}.statusModule.overallStatus", "RECRUITING")
    changes = diff(before, stopped)
    assert [(c.field, c.old, c.new, c.severity) for c in changes] == [
        ("overall_status", "RECRUITING", "TERMINATED", "critical"),
        ("why_stopped", None, "Primary PI left institution", "critical"),
    ]
    reworded = edit(stopped, f"{PS}.statusModule.whyStopped", "Funding ended")
    assert [(c.field, c.severity) for c in diff(stopped, reworded)] == [("why_stopped", "important")]


def test_last_known_status_change_is_important():
    old = load("NCT03475563")
    new = edit(old, f"{PS}.statusModule.lastKnownStatus", "ACTIVE_NOT_RECRUITING")
    assert diff(old, new) == [Change("last_known_status", "Last known status", "RECRUITING",
                                     "ACTIVE_NOT_RECRUITING", "important")]


# --- outcomes ----------------------------------------------------------------------------------

def test_primary_outcome_rewritten_is_critical_and_names_both_measures():
    old = load("NCT04267848")
    new = copy.deepcopy(old)
    new[PS]["outcomesModule"]["primaryOutcomes"][0]["measure"] = "Overall survival (OS)"
    [c] = diff(old, new)
    assert (c.field, c.severity) == ("primary_outcomes", "critical")
    assert (c.old, c.new) == (["Disease free survival (DFS)"], ["Overall survival (OS)"])
    tf = old[PS]["outcomesModule"]["primaryOutcomes"][0]["timeFrame"]
    assert c.detail == f"- Disease free survival (DFS) (time frame: {tf})\n+ Overall survival (OS) (time frame: {tf})"


def test_a_reworded_primary_outcome_shows_its_moved_time_frame_too():
    old = load("NCT04267848")
    new = copy.deepcopy(old)
    outcome = new[PS]["outcomesModule"]["primaryOutcomes"][0]
    outcome["measure"], outcome["timeFrame"] = "Overall survival (OS)", "Up to 10 years"
    [c] = diff(old, new)
    assert c.severity == "critical" and "+ Overall survival (OS) (time frame: Up to 10 years)" in c.detail


def test_a_primary_outcome_whose_wording_only_changed_spacing_is_not_critical():
    old = load("NCT04267848")
    new = copy.deepcopy(old)
    new[PS]["outcomesModule"]["primaryOutcomes"][0]["measure"] = "Disease  free survival (DFS) "
    assert [(c.field, c.severity) for c in diff(old, new)] == [("primary_outcomes", "minor")]


def test_primary_outcome_added_is_critical():
    old = load("NCT04267848")
    new = copy.deepcopy(old)
    new[PS]["outcomesModule"]["primaryOutcomes"].append({"measure": "Toxicity", "timeFrame": "1 year"})
    assert [(c.field, c.severity) for c in diff(old, new)] == [("primary_outcomes", "critical")]


def test_primary_outcome_time_frame_moved_is_important_and_description_minor():
    old = load("NCT04267848")
    new = copy.deepcopy(old)
    outcome = new[PS]["outcomesModule"]["primaryOutcomes"][0]
    outcome["timeFrame"] = "Up to 3 years"
    outcome["description"] += " Updated."
    changes = diff(old, new)
    assert [(c.field, c.severity, c.new) for c in changes[:1]] == [
        ("primary_outcome_time_frame", "important", "Up to 3 years")]
    assert fields(changes) == ["primary_outcome_time_frame", "primary_outcome_description"]
    assert "Disease free survival" in changes[0].label


# --- sites -------------------------------------------------------------------------------------

def find_site(rec: dict, facility: str) -> dict:
    return next(loc for loc in rec[PS]["contactsLocationsModule"]["locations"]
                if loc.get("facility") == facility)


def test_one_site_suspending_names_that_site_among_1148():
    old = load("NCT04267848")
    new = copy.deepcopy(old)
    site = find_site(new, "Katmai Oncology Group")
    assert site["status"] == "RECRUITING"
    site["status"] = "SUSPENDED"
    assert diff(old, new) == [Change(
        "site_status", "Site: Katmai Oncology Group (Anchorage, Alaska, United States)",
        "RECRUITING", "SUSPENDED", "important", site="Katmai Oncology Group")]


def test_sites_added_and_removed_are_important_and_keyed_by_facility_city_country():
    old = load("NCT04267848")
    new = copy.deepcopy(old)
    locs = new[PS]["contactsLocationsModule"]["locations"]
    gone = find_site(new, "Anchorage Oncology Centre")
    locs.remove(gone)
    locs.append({"facility": "Mayo Clinic Rochester", "city": "Rochester", "state": "Minnesota",
                 "country": "United States", "status": "RECRUITING"})
    changes = diff(old, new)
    assert {(c.field, c.site, c.severity) for c in changes} == {
        ("site_removed", "Anchorage Oncology Centre", "important"),
        ("site_added", "Mayo Clinic Rochester", "important"),
    }
    added = next(c for c in changes if c.field == "site_added")
    assert added.label == "Site: Mayo Clinic Rochester (Rochester, Minnesota, United States)"
    assert added.old is None and added.new["status"] == "RECRUITING"


def test_sites_without_facility_names_still_diff_by_place():
    old = load("NCT02210780")     # 42 sites: city/state/country only
    new = copy.deepcopy(old)
    removed = new[PS]["contactsLocationsModule"]["locations"].pop(0)
    [c] = diff(old, new)
    assert c.field == "site_removed" and removed["city"] in c.label


def test_site_contact_change_is_minor_and_shows_the_new_phone():
    old = load("NCT03475563")
    new = copy.deepcopy(old)
    site = new[PS]["contactsLocationsModule"]["locations"][0]
    site["contacts"][0]["phone"] = "+34 93 000 0000"
    [c] = diff(old, new)
    assert (c.field, c.severity, c.site) == ("site_contact", "minor", site["facility"])
    assert "+34 93 000 0000" in c.detail


def test_site_status_vanishing_everywhere_is_one_line_not_a_thousand():
    # The registry drops per-site status once a study stops recruiting.
    old = load("NCT04267848")
    new = edit(old, f"{PS}.statusModule.overallStatus", "ACTIVE_NOT_RECRUITING")
    for loc in new[PS]["contactsLocationsModule"]["locations"]:
        del loc["status"]
    changes = diff(old, new)
    assert fields(changes) == ["overall_status", "site_statuses"]
    assert changes[1].old == {"ACTIVE_NOT_RECRUITING": 96, "RECRUITING": 659, "SUSPENDED": 393}


def test_a_site_address_change_is_minor_site_details():
    old = load("NCT04267848")
    new = copy.deepcopy(old)
    find_site(new, "Katmai Oncology Group")["zip"] = "99999"
    [c] = diff(old, new)
    assert (c.field, c.severity, c.site) == ("site_details", "minor", "Katmai Oncology Group")
    assert c.new == {"zip": "99999"}


def _two_research_sites(rec: dict) -> dict:
    return edit(rec, f"{PS}.contactsLocationsModule.locations", [
        {"facility": "Research Site", "city": "Boston", "state": "Massachusetts", "zip": "02115",
         "country": "United States", "status": "RECRUITING"},
        {"facility": "Research Site", "city": "Boston", "state": "Massachusetts", "zip": "02114",
         "country": "United States", "status": "SUSPENDED"},
    ])


def test_sites_sharing_facility_city_country_pair_by_address_not_by_position():
    old = _two_research_sites(load("NCT04267848"))
    new = copy.deepcopy(old)
    new[PS]["contactsLocationsModule"]["locations"][0]["status"] = "TERMINATED"   # now sorts last
    changes = diff(old, new)
    assert [(c.field, c.old, c.new) for c in changes] == [("site_status", "RECRUITING", "TERMINATED")]

    gone = copy.deepcopy(old)
    del gone[PS]["contactsLocationsModule"]["locations"][0]
    changes = diff(old, gone)
    assert fields(changes) == ["site_removed"]
    assert changes[0].old["status"] == "RECRUITING"


# --- enrollment, dates, eligibility, results ---------------------------------------------------

def test_enrollment_count_and_type_are_one_change():
    old = load("NCT04267848")
    new = edit(old, f"{PS}.designModule.enrollmentInfo", {"count": 1148, "type": "ACTUAL"})
    assert diff(old, new) == [Change("enrollment", "Enrollment", {"count": 1210, "type": "ESTIMATED"},
                                     {"count": 1148, "type": "ACTUAL"}, "important")]
    assert record.words(diff(old, new)[0].new) == "1148 (actual)"


def test_completion_dates_moving_or_becoming_actual_are_important():
    old = load("NCT04267848")
    new = edit(old, f"{PS}.statusModule.primaryCompletionDateStruct", {"date": "2026-12", "type": "ESTIMATED"})
    new = edit(new, f"{PS}.statusModule.completionDateStruct", {"date": "2025-12-15", "type": "ACTUAL"})
    changes = diff(old, new)
    assert [(c.field, c.label, c.new, c.severity) for c in changes] == [
        ("primary_completion_date", "Primary completion date", {"date": "2026-12", "type": "ESTIMATED"},
         "important"),
        ("completion_date", "Completion date", {"date": "2025-12-15", "type": "ACTUAL"}, "important"),
    ]


def test_start_date_is_minor():
    old = load("NCT04267848")
    new = edit(old, f"{PS}.statusModule.startDateStruct", {"date": "2020-07-01", "type": "ACTUAL"})
    assert [(c.field, c.severity) for c in diff(old, new)] == [("start_date", "minor")]


def test_eligibility_criteria_change_says_which_list_lost_and_gained_which_item():
    old = load("NCT04267848")
    text = old[PS]["eligibilityModule"]["eligibilityCriteria"]
    new = edit(old, f"{PS}.eligibilityModule.eligibilityCriteria", text.replace("30-77 days", "30-90 days"))
    [c] = diff(old, new)
    assert (c.field, c.label, c.severity) == ("eligibility_criteria", "Eligibility criteria", "important")
    assert c.old == text                      # full texts kept for the record
    # The reworded criterion alone, named by its list, not the whole 80-line text.
    assert c.detail.splitlines() == [
        "- Inclusion: Complete recovery from surgery. Registration to A081801 must be 30-77 days following surgery",
        "+ Inclusion: Complete recovery from surgery. Registration to A081801 must be 30-90 days following surgery",
    ]


def test_eligibility_criteria_added_exclusion_and_dropped_inclusion_are_named():
    old = load("NCT03281889")
    text = old[PS]["eligibilityModule"]["eligibilityCriteria"]
    assert "* Life expectancy ≥ 12 months.\n" in text
    edited = text.replace("* Life expectancy ≥ 12 months.\n", "") + "\n* Prior proton therapy."
    [c] = diff(old, edit(old, f"{PS}.eligibilityModule.eligibilityCriteria", edited))
    assert c.severity == "important"
    assert c.detail.splitlines() == ["- Inclusion: Life expectancy ≥ 12 months.",
                                     "+ Exclusion: Prior proton therapy."]


def test_eligibility_criterion_moved_between_lists_is_lost_by_one_and_gained_by_the_other():
    old = load("NCT00763412")
    text = old[PS]["eligibilityModule"]["eligibilityCriteria"]
    moved = "* Patients with active ABPA on steroids\n"
    edited = text.replace(moved, "").replace("Exclusion Criteria:", moved + "\nExclusion Criteria:")
    [c] = diff(old, edit(old, f"{PS}.eligibilityModule.eligibilityCriteria", edited))
    assert c.detail.splitlines() == ["+ Inclusion: Patients with active ABPA on steroids",
                                     "- Exclusion: Patients with active ABPA on steroids"]


def test_eligibility_reordered_or_rebulleted_criteria_say_so_with_a_line_diff():
    old = load("NCT00763412")
    text = old[PS]["eligibilityModule"]["eligibilityCriteria"]
    new = edit(old, f"{PS}.eligibilityModule.eligibilityCriteria", text.replace("\n* ", "\n- "))
    [c] = diff(old, new)
    assert c.severity == "important"          # the severity rules are unchanged
    first, *rest = c.detail.splitlines()
    assert first.startswith("No criterion was added, removed or reworded")
    assert "- * Patients receiving growth hormone therapy or taking insulin" in rest


@pytest.mark.parametrize("key,field,value", [
    ("sex", "sex", "FEMALE"),
    ("minimumAge", "minimum_age", "21 Years"),
    ("maximumAge", "maximum_age", "75 Years"),
    ("healthyVolunteers", "healthy_volunteers", True),
])
def test_eligibility_fields_are_important(key, field, value):
    old = load("NCT04267848")
    new = edit(old, f"{PS}.eligibilityModule.{key}", value)
    assert [(c.field, c.new, c.severity) for c in diff(old, new)] == [(field, value, "important")]


def test_whitespace_only_eligibility_edit_is_not_an_important_change():
    old = load("NCT04267848")
    text = old[PS]["eligibilityModule"]["eligibilityCriteria"]
    new = edit(old, f"{PS}.eligibilityModule.eligibilityCriteria",
               text.replace("\n", "  \n", 3).replace("\n\n", "\n\n\n", 1))
    changes = diff(old, new)
    assert fields(changes) == ["eligibility_criteria"]
    assert changes[0].severity == "minor"
    # Indentation nests markdown bullets: that is still a real, important edit.
    nested = edit(old, f"{PS}.eligibilityModule.eligibilityCriteria", text.replace("\n* ", "\n  * ", 1))
    assert [c.severity for c in diff(old, nested)] == ["important"]


def test_results_posted_is_one_important_change_not_hundreds_of_leaves():
    after = load("NCT00763412")
    assert after["hasResults"] is True
    before = edit(after, "resultsSection", None)
    before["hasResults"] = False
    for k in ("resultsFirstSubmitDate", "resultsFirstSubmitQcDate", "resultsFirstPostDateStruct"):
        before[PS]["statusModule"].pop(k, None)
    [c] = diff(before, after)
    assert (c.field, c.old, c.new, c.severity) == ("results_posted", False, True, "important")
    assert "2017-06-05" in c.detail


def test_results_updated_is_one_minor_change():
    old = load("NCT00763412")
    new = copy.deepcopy(old)
    new["resultsSection"]["participantFlowModule"]["recruitmentDetails"] = "Amended."
    [c] = diff(old, new)
    assert (c.field, c.severity) == ("results_section", "minor")
    assert "participant flow" in c.detail


def test_expanded_access_opening_is_important_other_changes_minor():
    closed = load("NCT04267848")
    opened = edit(closed, f"{PS}.statusModule.expandedAccessInfo",
                  {"hasExpandedAccess": True, "nctId": "NCT09999999", "statusForNctId": "AVAILABLE"})
    assert [(c.field, c.severity) for c in diff(closed, opened)] == [("expanded_access", "important")]
    later = edit(opened, f"{PS}.statusModule.expandedAccessInfo.statusForNctId", "NO_LONGER_AVAILABLE")
    assert [(c.field, c.severity) for c in diff(opened, later)] == [("expanded_access", "minor")]


def test_central_contact_change_is_minor_and_shows_the_contact():
    old = load("NCT03281889")
    new = copy.deepcopy(old)
    new[PS]["contactsLocationsModule"]["centralContacts"][0]["email"] = "new@example.org"
    [c] = diff(old, new)
    assert (c.field, c.severity) == ("central_contacts", "minor")
    assert c.new[0]["email"] == "new@example.org"
    assert "new@example.org" in c.detail


def test_catalogued_minor_fields():
    old = load("NCT04267848")
    new = edit(old, f"{PS}.identificationModule.briefTitle", "A new title")
    new = edit(new, f"{PS}.designModule.phases", ["PHASE2", "PHASE3"])
    new = edit(new, f"{PS}.sponsorCollaboratorsModule.leadSponsor",
               {"name": "Someone Else", "class": "INDUSTRY"})
    new[PS]["armsInterventionsModule"]["interventions"][0]["description"] = "Changed."
    changes = diff(old, new)
    assert all(c.severity == "minor" for c in changes)
    assert fields(changes) == ["brief_title", "phases", "interventions", "lead_sponsor"]
    assert "Changed" not in str(changes[2].new)    # the list names; detail says what changed
    assert changes[2].detail.startswith("~ ")


def test_a_new_large_document_is_one_minor_change_naming_the_file():
    old = load("NCT02513394")
    new = copy.deepcopy(old)
    docs = new["documentSection"]["largeDocumentModule"]["largeDocs"]
    docs.append(dict(docs[0], filename="SAP_002.pdf"))
    [c] = diff(old, new)
    assert (c.field, c.severity) == ("documents", "minor")
    assert c.detail == "+ SAP_002.pdf"


# --- fallback, ordering, ignore ----------------------------------------------------------------

def test_anything_else_under_protocol_section_is_reported_by_path():
    old = load("NCT04267848")
    new = copy.deepcopy(old)
    new[PS]["descriptionModule"]["briefSummary"] += " Now also in Canada."
    new[PS]["conditionsModule"]["keywords"] = ["immunotherapy"]
    new[PS]["designModule"]["designInfo"]["maskingInfo"]["masking"] = "DOUBLE"
    changes = diff(old, new)
    assert [(c.field, c.label, c.severity) for c in changes] == [
        ("protocolSection.conditionsModule.keywords", "Keywords", "minor"),
        ("protocolSection.descriptionModule.briefSummary", "Brief summary", "minor"),
        ("protocolSection.designModule.designInfo.maskingInfo.masking", "Masking", "minor"),
    ]
    assert changes[1].detail.splitlines()[-1].endswith("Now also in Canada.")


def test_a_catalogue_source_changing_in_a_way_no_entry_describes_is_still_reported_by_path():
    # The results entry owns resultsFirstPostDateStruct but only speaks when results appear.
    old = load("NCT00763412")
    new = edit(old, f"{PS}.statusModule.resultsFirstPostDateStruct", {"date": "2017-06-06", "type": "ACTUAL"})
    assert [(c.field, c.severity) for c in diff(old, new)] == [
        ("protocolSection.statusModule.resultsFirstPostDateStruct", "minor")]


def test_fallback_reports_a_list_once_at_its_path_not_per_item():
    old = load("NCT03630471")
    new = copy.deepcopy(old)
    refs = new[PS]["referencesModule"]["references"]
    assert len(refs) == 12
    for ref in refs:
        ref["citation"] += " [corrected]"
    assert fields(diff(old, new)) == ["protocolSection.referencesModule.references"]


def test_a_catalogued_change_is_not_reported_again_by_path():
    old = load("NCT04267848")
    new = edit(old, f"{PS}.designModule.enrollmentInfo.count", 10)
    assert fields(diff(old, new)) == ["enrollment"]


def test_most_severe_first_then_catalogue_order():
    old = load("NCT04267848")
    new = edit(old, f"{PS}.descriptionModule.briefSummary", "Short.")
    new = edit(new, f"{PS}.designModule.enrollmentInfo", {"count": 900, "type": "ACTUAL"})
    new = edit(new, f"{PS}.statusModule.whyStopped", "Slow accrual")
    new = edit(new, f"{PS}.statusModule.overallStatus", "TERMINATED")
    find_site(new, "Katmai Oncology Group")["status"] = "TERMINATED"
    changes = diff(old, new)
    assert fields(changes) == ["overall_status", "why_stopped", "site_status", "enrollment",
                               "protocolSection.descriptionModule.briefSummary"]
    ranks = [SEVERITY_RANK[c.severity] for c in changes]
    assert ranks == sorted(ranks, reverse=True)
    # Deterministic: the same edit with shuffled key order gives the very same list.
    assert diff(shuffled(old, random.Random(1)), shuffled(new, random.Random(2))) == changes


def test_ignore_prefixes_suppress_fallback_and_catalogue_alike():
    old = load("NCT04267848")
    new = copy.deepcopy(old)
    new[PS]["referencesModule"]["references"].pop()
    new[PS]["descriptionModule"]["detailedDescription"] += " more"
    new[PS]["descriptionModule"]["briefSummary"] += " more"
    find_site(new, "Katmai Oncology Group")["status"] = "SUSPENDED"
    ignore = ["protocolSection.referencesModule", "protocolSection.descriptionModule.detailedDescription"]
    assert fields(diff(old, new, ignore=ignore)) == ["site_status",
                                                     "protocolSection.descriptionModule.briefSummary"]
    # Ignoring the module that holds contacts and sites turns both off.
    ignore.append("protocolSection.contactsLocationsModule")
    assert fields(diff(old, new, ignore=ignore)) == ["protocolSection.descriptionModule.briefSummary"]
    # A prefix matches whole path segments only.
    assert "protocolSection.descriptionModule.briefSummary" in fields(
        diff(old, new, ignore=["protocolSection.descriptionModule.brief"]))


def test_ignore_accepts_a_catalogue_field_name():
    old = load("NCT03475563")
    new = copy.deepcopy(old)
    new[PS]["contactsLocationsModule"]["locations"][0]["contacts"][0]["name"] = "Someone New"
    new = edit(new, f"{PS}.statusModule.lastKnownStatus", "COMPLETED")
    assert fields(diff(old, new, ignore=("site_contact",))) == ["last_known_status"]


# --- every change is of a catalogued kind ------------------------------------------------------

def _skeleton(rec: dict) -> dict:
    """The record with its statuses stopped, sites, outcomes and criteria rewritten: most
    catalogue entries speak, in both directions."""
    out = edit(rec, f"{PS}.statusModule.overallStatus", "TERMINATED")
    out = edit(out, f"{PS}.statusModule.whyStopped", "Funding ended")
    out = edit(out, f"{PS}.outcomesModule.primaryOutcomes", [{"measure": "Something else", "timeFrame": "1 day"}])
    out = edit(out, f"{PS}.eligibilityModule.eligibilityCriteria", "Inclusion Criteria:\n\n* Adults")
    out = edit(out, f"{PS}.contactsLocationsModule.locations", [{"facility": "Only Site", "city": "X",
                                                                  "country": "Y", "status": "RECRUITING"}])
    return edit(out, f"{PS}.descriptionModule.briefSummary", "Rewritten.")


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: p.stem)
def test_every_change_is_of_a_catalogued_kind_with_a_severity_it_allows(path):
    real = json.loads(path.read_text(encoding="utf-8"))
    changes = diff(real, _skeleton(real)) + diff(_skeleton(real), real) + diff({}, real) + diff(real, {})
    assert changes
    for c in changes:
        kind = events.kind(c.field)
        assert kind is not events.FALLBACK or "." in c.field or c.field in {"hasResults", "resultsSection"}
        assert c.severity in kind.severities, (c.field, c.severity)
        if kind is not events.FALLBACK:   # its label, perhaps with "(whitespace only)" or "(order)" after it
            assert any(c.label.startswith(label.split("{")[0]) for label in (kind.label, *kind.also)), c.label


# --- purity ------------------------------------------------------------------------------------

def test_diff_reads_no_clock_and_no_network(monkeypatch):
    old = load("NCT04267848")
    new = edit(old, f"{PS}.statusModule.overallStatus", "SUSPENDED")

    def boom(*a, **k):
        raise AssertionError("diff must not read the clock or the network")

    class NoClock(datetime.datetime):
        now = utcnow = today = classmethod(boom)

    with monkeypatch.context() as m:
        m.setattr(socket, "socket", boom)
        m.setattr(socket, "create_connection", boom)
        m.setattr(socket, "getaddrinfo", boom)
        for name in ("time", "monotonic", "perf_counter", "time_ns", "localtime", "gmtime"):
            m.setattr(time, name, boom)
        m.setattr(datetime, "datetime", NoClock)
        m.setattr(datetime, "date", NoClock)
        changes = diff(old, new)
    assert fields(changes) == ["overall_status"]


@pytest.mark.parametrize("module", [diff_module, diff_sites, diff_util, events])
def test_diff_module_imports_nothing_that_does_io(module):
    imported = {getattr(v, "__name__", "") for v in vars(module).values()}
    assert not imported & {"socket", "time", "datetime", "httpx", "sqlalchemy", "os", "random"}


def test_diff_does_not_mutate_its_inputs():
    old = load("NCT04267848")
    new = edit(old, f"{PS}.statusModule.overallStatus", "SUSPENDED")
    before = (copy.deepcopy(old), copy.deepcopy(new))
    diff(old, new, ignore=["protocolSection.contactsLocationsModule"])
    assert (old, new) == before


# --- partial and malformed records ------------------------------------------------------------

@pytest.mark.parametrize("path, value", [
    (f"{PS}", 5),
    (f"{PS}.statusModule.overallStatus", []),
    (f"{PS}.eligibilityModule.eligibilityCriteria", 5),
    (f"{PS}.outcomesModule.primaryOutcomes", [{"measure": [1, "a"]}]),
    (f"{PS}.armsInterventionsModule.armGroups", [{"label": 5}, {"label": "Arm A"}]),
    (f"{PS}.contactsLocationsModule.locations", [{"facility": 5, "city": "X"}, {"facility": "Y", "state": 3}]),
    ("resultsSection", "x"),
    ("annotationSection", 5),
    ("documentSection", {"largeDocumentModule": {"largeDocs": [{"filename": 5}, {"filename": "a.pdf"}]}}),
])
def test_wrong_types_in_a_partial_record_are_reported_not_a_crash(path, value):
    old = load("NCT02513394")
    new = edit(old, path, value)
    assert diff(old, new) and diff(new, old)
