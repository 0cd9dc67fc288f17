"""SYNTHETIC records for the tests of ``trialwatch alternatives``.

Every record here is built from the synthetic NCT03268603 fixture (tests/fixtures, itself
derived from a real record's layout): invented NCT numbers in the NCT9xxxxxxx range, invented
titles, sites and interventions. Nothing in them is a fact about a real trial.

The scene: NCT03268603, an ALS trial of autologous mesenchymal stromal cells, no longer
recruits. Places: Rochester, MN (44.02,-92.47) is "her"; Minneapolis (~120 km) and Chicago
(~430 km) are near; Boston (~1,800 km) is far.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CLOSED = "NCT03268603"
OWN_EA = "NCT99268603"           # named by CLOSED's expandedAccessInfo

ROCHESTER = (44.02, -92.47)
MINNEAPOLIS = (44.98, -93.27)
CHICAGO = (41.88, -87.63)
BOSTON = (42.36, -71.06)

ALS = "Amyotrophic Lateral Sclerosis"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def trial(nct: str, *, status: str = "RECRUITING", condition: str = ALS,
          intervention: str = "Mesenchymal stromal cells", itype: str = "BIOLOGICAL",
          sites: list[tuple[float, float, str]] = (), study_type: str = "INTERVENTIONAL",
          title: str | None = None, phases: list[str] | None = None) -> dict:
    """A synthetic trial: the fixture with the fields the search and the ranking read replaced."""
    r = copy.deepcopy(fixture(CLOSED))
    ps = r["protocolSection"]
    ps["identificationModule"].update(nctId=nct, briefTitle=title or f"Synthetic {nct}: {intervention} in {condition}",
                                      officialTitle=title or f"Synthetic {nct}")
    ps["statusModule"]["overallStatus"] = status
    ps["statusModule"]["expandedAccessInfo"] = {"hasExpandedAccess": False}
    ps["conditionsModule"] = {"conditions": [condition]}
    r["derivedSection"]["conditionBrowseModule"] = {"meshes": [{"id": "D0", "term": condition}]}
    ps["designModule"]["studyType"] = study_type
    if phases is not None:
        ps["designModule"]["phases"] = phases
    ps["armsInterventionsModule"] = {"interventions": [{"type": itype, "name": intervention}]}
    ps["contactsLocationsModule"]["locations"] = [
        {"facility": f"Synthetic site {i + 1} of {nct}", "city": "Somewhere", "country": "United States",
         "status": site_status, "geoPoint": {"lat": lat, "lon": lon},
         "contacts": [{"name": "Synthetic Coordinator", "role": "CONTACT", "phone": "555-0100"}]}
        for i, (lat, lon, site_status) in enumerate(sites)]
    return r


def scene() -> dict[str, dict]:
    """name -> record: the closed trial, what should be listed, and what must not be."""
    return {
        "closed": fixture(CLOSED),
        "own_ea": fixture("NCT03268603_EA"),
        # recruiting ALS cell therapy, near: allogeneic stem-cell wording, same product class
        "near_cell": trial("NCT90000001", intervention="Allogeneic bone marrow-derived mesenchymal stem cells",
                           sites=[(*MINNEAPOLIS, "RECRUITING")], phases=["PHASE2"]),
        "chicago_cell": trial("NCT90000002", status="NOT_YET_RECRUITING",
                              intervention="Mesenchymal stromal cells (MSC-NTF)",
                              sites=[(*CHICAGO, "NOT_YET_RECRUITING"), (*BOSTON, "RECRUITING")],
                              phases=["PHASE3"]),
        # nearest of all, but a GENETIC product: a less close intervention ranks after
        "nearest_genetic": trial("NCT90000003", itype="GENETIC",
                                 intervention="Mesenchymal stromal cells engineered to secrete GDNF",
                                 sites=[(*ROCHESTER, "RECRUITING")], phases=["PHASE1"]),
        # recruiting ALS cell therapy, far
        "far_cell": trial("NCT90000004", intervention="Autologous mesenchymal stromal cells",
                          sites=[(*BOSTON, "RECRUITING")], phases=["PHASE2"]),
        # must never be listed
        "als_drug": trial("NCT90000005", intervention="Tofersen-like antisense oligonucleotide", itype="DRUG",
                          sites=[(*MINNEAPOLIS, "RECRUITING")]),
        "other_disease_cell": trial("NCT90000006", condition="Multiple Sclerosis",
                                    sites=[(*MINNEAPOLIS, "RECRUITING")]),
        "completed_cell": trial("NCT90000007", status="COMPLETED", sites=[(*MINNEAPOLIS, "COMPLETED")]),
        # expanded access
        "other_ea": trial("NCT90000008", status="AVAILABLE", study_type="EXPANDED_ACCESS",
                          intervention="Mesenchymal stem cells", title="Synthetic expanded access: MSC for ALS"),
        "ea_drug": trial("NCT90000009", status="AVAILABLE", study_type="EXPANDED_ACCESS", itype="DRUG",
                         intervention="Tofersen-like antisense oligonucleotide"),
        "ea_gone": trial("NCT90000010", status="NO_LONGER_AVAILABLE", study_type="EXPANDED_ACCESS",
                         intervention="Mesenchymal stromal cells"),
    }


def nct(r: dict) -> str:
    return r["protocolSection"]["identificationModule"]["nctId"]
