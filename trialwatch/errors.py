"""The one exception tree of trialwatch.

Every error a user can meet is a ``TrialwatchError``: it says what went wrong and what to do
about it, and carries the exit code the CLI returns for it.

    TrialwatchError (exit 1)             unexpected or internal
    ├── UsageError (exit 2)              bad command-line input
    │   ├── InvalidNctId                 "NCT123X" is not an NCT number
    │   └── ConfigError                  config.yaml is missing, malformed or has an unknown key
    ├── TrialNotFound (exit 3)           ClinicalTrials.gov has no such trial (404)
    ├── CtgovError (exit 4)              ClinicalTrials.gov unreachable or answering garbage
    │   ├── CtgovUnavailable             network errors, 429/5xx after every retry
    │   └── CtgovBadResponse             a body that is not the JSON we asked for; never stored
    │       └── HistoryUnavailable       the internal version-history API failed (warned, never fatal)
    ├── StoreError (exit 5)              the database cannot be opened, is too old, or is busy
    │   └── LockHeld                     another poller holds the poll lock
    ├── MailError (exit 6)               mail could not be sent (after retries) or is misconfigured
    └── TokenError (exit 2)              a signed link is forged, altered or expired
"""

from __future__ import annotations


class TrialwatchError(Exception):
    """Base of every error trialwatch raises on purpose."""

    exit_code = 1
    hint = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class UsageError(TrialwatchError):
    exit_code = 2


class InvalidNctId(UsageError):
    hint = "An NCT number is 'NCT' followed by up to 8 digits, e.g. NCT03268603."


class ConfigError(UsageError):
    hint = "Fix the configuration file and run the command again."


class TrialNotFound(TrialwatchError):
    exit_code = 3
    hint = "Check the NCT number on https://clinicaltrials.gov; the record may have been withdrawn from public view."


class CtgovError(TrialwatchError):
    exit_code = 4
    hint = "Nothing was stored. Try again later; if it persists, check ctgov.base_url and your network."


class CtgovUnavailable(CtgovError):
    pass


class CtgovBadResponse(CtgovError):
    pass


class StoreError(TrialwatchError):
    exit_code = 5
    hint = "Check the 'database' URL in config.yaml; run 'trialwatch db upgrade' after an upgrade of trialwatch."


class LockHeld(StoreError):
    hint = "Another trialwatch poll is running on this database; wait for it to finish."


class MailError(TrialwatchError):
    exit_code = 6
    hint = "Check the email settings in config.yaml and TRIALWATCH_SMTP_PASSWORD; queued mail is kept and retried."


class TokenError(TrialwatchError):
    exit_code = 2
    hint = "The link is invalid or has expired; use the newest email, or subscribe again."


class HistoryUnavailable(CtgovBadResponse):
    """The registry's internal version-history API answered 404, garbage or an unexpected
    shape. Never fatal: trialwatch warns once and carries on without the history."""

    hint = ("The registry's version history is an undocumented internal API and may have changed; "
            "checks and polls go on without it. Set history.url if it moved.")
