"""Eligibility at a glance: criteria text as inclusion and exclusion lists, never losing text."""

from __future__ import annotations

import re

import pytest

from conftest import RECORDS
from trialwatch.eligibility import criteria_detail, glance, parse_criteria

PS = "protocolSection"
ALL_RECORDS = sorted(p.stem for p in RECORDS.glob("NCT*.json"))


def criteria_of(rec):
    return rec[PS]["eligibilityModule"]["eligibilityCriteria"]


def words_of(text):
    return sorted(re.findall(r"\w+", text.lower()))


BULLET = re.compile(r"^\s*(?:[*-]|\d{1,2}[.)])\s+")
HEADING = re.compile(r"^\W*(key\s+)?(inclusion|exclusion|eligibility)\s+criteria\W*$", re.I)


@pytest.mark.parametrize("nct", ALL_RECORDS)
def test_no_word_of_any_real_record_is_lost(record, nct):
    text = criteria_of(record(nct))
    c = parse_criteria(text)
    kept = "\n".join(c.inclusion + c.exclusion + c.other)
    # Every word but the headings the lists stand for and the bullets' own numbers.
    body = "\n".join(BULLET.sub("", line) for line in text.replace("\\", "").splitlines()
                     if not HEADING.match(line.strip()))
    assert words_of(kept) == words_of(body)


def test_headed_bulleted_record_splits_into_two_lists(record):
    c = parse_criteria(criteria_of(record("NCT00763412")))
    assert c.inclusion[0] == "Male or females 12 -24 years old"
    assert c.exclusion[-1] == "Patients taking medications that affect glucose metabolism or contraindicated with repaglinide"
    assert (len(c.inclusion), len(c.exclusion), c.other) == (5, 6, [])
    # Markdown escapes are read, not shown: "\<126 mg/dl" is "<126 mg/dl".
    assert "fasting blood glucose <126 mg/dl" in c.inclusion[2]


def test_nested_bullets_stay_with_their_parent(record):
    c = parse_criteria(criteria_of(record("NCT04267848")))
    first = c.inclusion[0].split("\n")
    assert first[0] == "A female of childbearing potential is a sexually mature female who:"
    assert first[1:] == ["  - Has not undergone a hysterectomy or bilateral oophorectomy; or",
                         "  - Has not been naturally postmenopausal for at least 12 consecutive months "
                         "(i.e., has had menses at any time in the preceding 12 consecutive months)"]
    assert len(c.inclusion) == 25 and c.exclusion == []


def test_numbered_key_criteria_and_a_heading_without_colon(record):
    c = parse_criteria(criteria_of(record("NCT02210780")))      # "Key Inclusion Criteria:", "1."
    assert c.inclusion[2].startswith("Eczema Area and Severity Index (EASI) score ≥16")
    assert c.exclusion[0] == "Prior treatment with dupilumab (REGN668/ SAR231893)"
    c = parse_criteria(criteria_of(record("NCT00184067")))      # "Exclusion Criteria" (no colon)
    assert len(c.exclusion) == 7


def test_a_paragraph_between_bullets_is_an_item_of_its_own(record):
    c = parse_criteria(criteria_of(record("NCT02513394")))
    assert ("FFPE tumor tissue block must be confirmed to be received at the central sample "
            "repository prior to randomization.") in c.inclusion


def test_generic_eligibility_heading_before_exclusions_is_inclusion(record):
    c = parse_criteria(criteria_of(record("NCT03630471")))      # "Eligibility criteria:" ... "Exclusion criteria:"
    assert c.inclusion[:2] == ["For adolescent participants:",
                               "Enrolled as a student in Grades 9-12 (corresponding to 13-20 years of age)"]
    assert c.exclusion[-1] == "Intoxicated at the point of consent or assessment"
    assert c.other == []


@pytest.mark.parametrize("text, inclusion, exclusion", [
    ("**Inclusion Criteria:**\n\n- Adults\n- ECOG 0-1\n\n**Exclusion Criteria:**\n\n- Pregnancy",
     ["Adults", "ECOG 0-1"], ["Pregnancy"]),
    ("INCLUSION CRITERIA\n1) Adults\n2) Consent\nEXCLUSION CRITERIA\n1) Pregnancy",
     ["Adults", "Consent"], ["Pregnancy"]),
    ("### Inclusion criteria\n* Adults\n### Non-inclusion criteria\n* Pregnancy",
     ["Adults"], ["Pregnancy"]),
    ("Inclusion Criteria:\n* Adults\n  1. older than 18\n  2. younger than 80\nExclusion criteria: pregnancy",
     ["Adults\n  - older than 18\n  - younger than 80"], ["pregnancy"]),
    ("Inclusion Criteria for Part A:\n* Adults\nExclusion Criteria:\n* Pregnancy",
     ["Inclusion Criteria for Part A:", "Adults"], ["Pregnancy"]),
    ("Inclusion Criteria:\n* Adults with a long criterion\nwrapped on a second line\n\nExclusion Criteria:\n* None",
     ["Adults with a long criterion wrapped on a second line"], ["None"]),
])
def test_layouts(text, inclusion, exclusion):
    c = parse_criteria(text)
    assert (c.inclusion, c.exclusion, c.other) == (inclusion, exclusion, [])


def test_unknown_layout_is_one_list_with_no_split():
    text = "Adults with ALS who can walk.\n\nNo prior stem cell therapy; no pregnancy."
    c = parse_criteria(text)
    assert c.split is False
    assert (c.inclusion, c.exclusion) == ([], [])
    assert c.other == ["Adults with ALS who can walk.", "No prior stem cell therapy; no pregnancy."]
    # "Inclusion and exclusion criteria:" names neither list; it stays as text.
    c = parse_criteria("Inclusion and exclusion criteria:\n* Adults")
    assert c.other == ["Inclusion and exclusion criteria:", "Adults"]


@pytest.mark.parametrize("value", [None, "", 5, ["x"]])
def test_missing_or_wrong_typed_criteria_give_empty_lists(value):
    c = parse_criteria(value)
    assert (c.inclusion, c.exclusion, c.other) == ([], [], [])


def test_age_sex_and_healthy_volunteers_on_one_line():
    assert glance("ALL", "18 Years", None, False) == "18 Years and older · all sexes · no healthy volunteers"
    assert glance("FEMALE", "3 Years", "18 Years", True) == \
        "3 Years to 18 Years · female only · healthy volunteers accepted"
    assert glance(None, None, "18 Years", None) == "up to 18 Years · sex not stated · healthy volunteers not stated"


def test_criteria_detail_names_list_and_item():
    old = "Inclusion Criteria:\n* Adults\n* ECOG 0-1\n\nExclusion Criteria:\n* Pregnancy"
    new = "Inclusion Criteria:\n* Adults\n* ECOG 0-2\n\nExclusion Criteria:\n* Pregnancy\n* Prior PD-1 therapy"
    assert criteria_detail(old, new).splitlines() == [
        "- Inclusion: ECOG 0-1", "+ Inclusion: ECOG 0-2", "+ Exclusion: Prior PD-1 therapy"]
    assert criteria_detail(old, old.replace("* ", "- ")) is None      # same items, other bullets
    assert criteria_detail(None, "Inclusion Criteria:\n* Adults") == "+ Inclusion: Adults"
