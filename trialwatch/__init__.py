"""trialwatch: watches ClinicalTrials.gov records and tells subscribed physicians what changed.

The pipeline, one module a stage: config -> ctgov (fetch) -> store (snapshots) -> diff (pure)
-> notify (render + mail) -> poller/daemon (schedule). Importing this package builds nothing:
no engine, client, scheduler or template environment exists until a caller asks for one.
"""

__version__ = "0.1.0"
