"""The one exception tree of trialwatch.

Every error a user can meet is a ``TrialwatchError``: it says what went wrong and what to do
about it, and carries the exit code the CLI returns for it.

    TrialwatchError (exit 1)             unexpected or internal
    ├── UsageError (exit 2)              bad command-line input
    │   ├── InvalidNctId                 "NCT123X" is not an NCT number
    │   ├── ConfigError                  config.yaml is missing, malformed or has an unknown key
    │   └── PlaceError                   a place (--near, a subscriber's location) unknown or ambiguous
    ├── TrialNotFound (exit 3)           ClinicalTrials.gov has no such trial (404)
    ├── CtgovError (exit 4)              ClinicalTrials.gov unreachable or answering garbage
    │   ├── CtgovUnavailable             network errors, 429/5xx after every retry
    │   │   └── CtgovUnreachable         the host cannot be resolved or refuses connections
    │   └── CtgovBadResponse             a body that is not the JSON we asked for; never stored
    │       ├── HistoryUnavailable       the internal version-history API failed (warned, never fatal)
    │       └── BadRecord                one trial's record cannot be read (nct_id says which)
    ├── PollStopped (exit 4)             a signal stopped the poll before it finished
    ├── StoreError (exit 5)              the database cannot be opened, is too old, or is busy
    │   ├── LockHeld                     another poller holds the poll lock
    │   └── LockLost                     the poll lost its lock (lease expired) and stopped
    ├── MailError (exit 6)               mail could not be sent (after retries) or is misconfigured
    │   └── MailUndelivered              messages stay queued or failed after a send
    └── TokenError (exit 2)              a signed link is forged, altered or expired

Anything else that escapes a command is a bug: exit 1, with a hint to run again with ``-vv``.
``EXIT_CODES`` is the table of the README (a test checks that the two agree).

An error about one trial carries its ``nct_id``; ``describe()`` is the one readable line a
report lists (``poll --json`` ``errors``): "NCT…: what is wrong".
"""

from __future__ import annotations


class TrialwatchError(Exception):
    """Base of every error trialwatch raises on purpose."""

    exit_code = 1
    hint = ""

    nct_id: str | None = None

    def __init__(self, message: str, *, hint: str | None = None, nct_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint
        if nct_id is not None:
            self.nct_id = nct_id

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message

    def describe(self) -> str:
        """One line for a report: "NCT…: message" for an error about one trial, else the message."""
        return f"{self.nct_id}: {self.message}" if self.nct_id else self.message

    def to_dict(self) -> dict:
        return {"kind": type(self).__name__, "nct_id": self.nct_id, "message": self.message,
                "exit_code": self.exit_code}


class UsageError(TrialwatchError):
    exit_code = 2


class InvalidNctId(UsageError):
    hint = "An NCT number is 'NCT' followed by up to 8 digits, e.g. NCT03268603."


class ConfigError(UsageError):
    hint = "Fix the configuration file and run the command again."


class PlaceError(UsageError):
    hint = "Write a US ZIP code, a city with its US state or country ('Rochester, MN'), or lat,lon."


class TrialNotFound(TrialwatchError):
    exit_code = 3
    hint = "Check the NCT number on https://clinicaltrials.gov; the record may have been withdrawn from public view."


class CtgovError(TrialwatchError):
    exit_code = 4
    hint = "Nothing was stored. Try again later; if it persists, check ctgov.base_url and your network."


class CtgovUnavailable(CtgovError):
    pass


class CtgovUnreachable(CtgovUnavailable):
    """No connection at all (name resolution failed, connection refused): retrying for minutes
    would not help, so the client gives up after one quick retry."""

    hint = ("Check ctgov.base_url in config.yaml (the default is https://clinicaltrials.gov/api/v2) and "
            "this machine's network and DNS; nothing was stored.")


class CtgovBadResponse(CtgovError):
    pass


class BadRecord(CtgovBadResponse):
    """One trial's record has a shape trialwatch cannot store; the other trials go on."""

    hint = "The other trials were polled; this record is tried again at the next poll."


class PollStopped(TrialwatchError):
    exit_code = 4
    hint = "What was fetched is stored; the rest is fetched on the next poll."


class StoreError(TrialwatchError):
    exit_code = 5
    hint = "Check the 'database' URL in config.yaml; run 'trialwatch db upgrade' after an upgrade of trialwatch."


class LockHeld(StoreError):
    hint = "Another trialwatch poll is running on this database; wait for it to finish."


class LockLost(StoreError):
    hint = ("The poll's lock lease expired and another poller took it, so this poll stopped; what it "
            "stored is kept. Check for a stalled database or two pollers on one database.")


class MailError(TrialwatchError):
    exit_code = 6
    hint = "Check the email settings in config.yaml and TRIALWATCH_SMTP_PASSWORD; queued mail is kept and retried."


class MailUndelivered(MailError):
    """A send left messages undelivered: ``queued`` wait for a retry, ``failed`` failed for good."""

    def __init__(self, message: str, *, queued: int = 0, failed: int = 0, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.queued = queued
        self.failed = failed


class TokenError(TrialwatchError):
    exit_code = 2
    hint = "The link is invalid or has expired; use the newest email, or subscribe again."


class HistoryUnavailable(CtgovBadResponse):
    """The registry's internal version-history API answered 404, garbage or an unexpected
    shape. Never fatal: trialwatch warns once and carries on without the history."""

    hint = ("The registry's version history is an undocumented internal API and may have changed; "
            "checks and polls go on without it. Set history.url if it moved.")


# The exit codes, as the README's table states them (tests/test_exit_codes.py compares the two).
EXIT_CODES: dict[int, type[TrialwatchError] | None] = {
    0: None,
    1: TrialwatchError,
    2: UsageError,
    3: TrialNotFound,
    4: CtgovError,
    5: StoreError,
    6: MailError,
}
