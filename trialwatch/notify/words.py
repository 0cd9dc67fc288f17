"""What severities, digest frequencies and new statuses mean, in the words mail uses."""

SEVERITY_WORDS = {"critical": "critical changes only",
                  "important": "important and critical changes",
                  "minor": "every change, minor ones included"}
DIGEST_WORDS = {"each_poll": "as soon as they are found", "daily": "in a daily digest",
                "weekly": "in a weekly digest"}

# What a new overall status means for a physician who refers patients.
STATUS_MEANING = {
    "RECRUITING": "Now recruiting: you can refer eligible patients.",
    "NOT_YET_RECRUITING": "Not recruiting yet: referrals open once the status is Recruiting.",
    "ENROLLING_BY_INVITATION": "Enrolling by invitation only: ask the study team before referring anyone.",
    "ACTIVE_NOT_RECRUITING": "No longer recruiting: new referrals are not possible; enrolled patients continue.",
    "SUSPENDED": "Enrolment paused: hold referrals. Enrolled patients should ask their site what this means for them.",
    "TERMINATED": "Stopped early: no new referrals. Enrolled patients should ask their site about follow-up.",
    "WITHDRAWN": "Withdrawn before enrolling anyone: no referrals.",
    "COMPLETED": "Completed: no new referrals; results may be posted on the record later.",
    "AVAILABLE": "Expanded access is available: contact the sponsor to request it for a patient.",
    "NO_LONGER_AVAILABLE": "Expanded access is no longer available.",
    "TEMPORARILY_NOT_AVAILABLE": "Expanded access is temporarily unavailable: hold requests.",
}
SITE_MEANING = {
    "RECRUITING": "This site now recruits: refer patients to it directly.",
    "NOT_YET_RECRUITING": "This site is not recruiting yet.",
    "ACTIVE_NOT_RECRUITING": "This site no longer takes new patients.",
    "SUSPENDED": "This site paused enrolment.",
    "TERMINATED": "This site stopped.",
    "WITHDRAWN": "This site withdrew.",
    "COMPLETED": "This site finished enrolling.",
}
FIELD_MEANING = {
    "eligibility_criteria": "Re-check patients you planned to refer against the new criteria.",
    "minimum_age": "Re-check the age of patients you planned to refer.",
    "maximum_age": "Re-check the age of patients you planned to refer.",
    "sex": "Re-check which patients qualify.",
    "healthy_volunteers": "Re-check which participants qualify.",
    "why_stopped": "The sponsor gave a reason for stopping; tell enrolled patients who ask.",
    "results_posted": "Results are posted on the record.",
}
