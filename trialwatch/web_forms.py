"""The subscriber forms of ``trialwatch serve``: subscribe (double opt-in: the form, then a
confirmation mail, then confirm), confirm, manage and one-click unsubscribe, and the preferences
form subscribe and manage share. ``FormPages`` is mixed into ``web.Web``, which supplies
``render``, ``message``, ``watched_ids``, ``store``, ``config`` and ``secret``; CSRF and the
security headers stay in ``web``. The rules themselves live in ``notify.subscribers``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import record as rec
from . import tokens, untrusted
from .config import SEVERITIES
from .errors import InvalidNctId, MailError, TokenError

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from .store import Subscriber

DIGESTS = ("each_poll", "daily", "weekly")
# Confirmation mails: at most this many per window (notify.subscribers.RATE_WINDOW, an hour),
# per address and per client address.
MAX_CONFIRMS_PER_EMAIL = 3
MAX_SUBSCRIBES_PER_CLIENT = 10


class FormPages:
    """Subscribe, confirm, manage and unsubscribe handlers (a mixin of ``web.Web``)."""

    # -- subscribe ---------------------------------------------------------------------------
    def subscribe(self, request: "Request", form: Any) -> "Response":
        watched = self.watched_ids()
        if form is None:
            return self.blank_subscribe_form(request, watched)
        prefs, errors = self.read_prefs(form, watched)
        email = self.subscriber_email(form, errors)
        if errors:
            return self.prefs_form(request, "subscribe.html", watched, status=400, errors=errors,
                                   email=str(form.get("email", ""))[:320], **prefs)
        client = request.client.host if request.client else "unknown"
        if not self.allow("subscribe_client", client, MAX_SUBSCRIBES_PER_CLIENT):
            return self.message(request, 429, "Too many requests",
                                "Too many subscription requests came from your network. Please try again in an hour.")
        sub = self.upsert_pending(email, prefs)
        # Same answer whether or not a mail was sent, so the page never tells who is subscribed.
        if self.allow("confirm_email", email.lower(), MAX_CONFIRMS_PER_EMAIL):
            try:
                self.mail_confirmation(sub, prefs)
            except MailError:
                return self.message(request, 503, "Email cannot be sent right now",
                                    "Your choices are saved, but the confirmation email could not be sent. "
                                    "Please try again later.")
        return self.render(request, "check_inbox.html", email=email)

    def blank_subscribe_form(self, request: "Request", watched: list[str]) -> "Response":
        # "Get email when this trial changes" on a trial page: that trial comes ticked.
        asked = request.query_params.get("trial", "")
        try:
            ticked = [rec.normalize_nct(asked)] if asked else []
        except InvalidNctId:
            ticked = []
        return self.prefs_form(request, "subscribe.html", watched, trials=[t for t in ticked if t in watched])

    @staticmethod
    def subscriber_email(form: Any, errors: list[str]) -> str:
        """The form's address, or "" with the reason put first in ``errors``."""
        raw = str(form.get("email", "")).strip()
        try:
            # The rule config.yaml subscribers follow too: only an address we can mail is stored.
            return untrusted.subscriber_address(raw)
        except ValueError:
            errors.insert(0, "This address has characters outside ASCII, which our mail server cannot send to. "
                             "Please use an address written in plain ASCII letters." if not raw.isascii()
                          else "Please enter a valid email address.")
            return ""

    def mail_confirmation(self, sub: "Subscriber", prefs: dict) -> None:
        """Mail ``sub`` her confirmation link; MailError when it cannot be sent."""
        from . import notify

        adding = _new_following(sub, prefs) if sub.state == "active" else None
        if adding:
            token = tokens.make_add(self.secret, sub.id, sub.token_version, *adding)
        else:
            token = tokens.make(self.secret, "confirm", sub.id, sub.token_version)
        notify.send_confirmation(self.store, self.config, sub,
                                 f"{self.config.email.public_url}/confirm?token={token}",
                                 **({"adding": adding} if adding else {}))

    def allow(self, kind: str, key: str, limit: int) -> bool:
        """Count one event against ``limit`` per hour; False (and nothing counted) when the
        limit is reached."""
        from .notify import subscribers

        return subscribers.allow(self.store, kind, key, limit)

    def upsert_pending(self, email: str, prefs: dict) -> "Subscriber":
        from .notify import subscribers

        return subscribers.upsert_pending(self.store, email, prefs)

    # -- confirm / manage / unsubscribe -----------------------------------------------------
    def subscriber_for(self, purpose: str, token: str) -> "Subscriber":
        """The subscriber a signed link names; TokenError if forged, expired or superseded."""
        from .notify import subscribers

        return subscribers.subscriber_for(self.store, self.secret, purpose, token)

    def bad_link(self, request: "Request", e: TokenError) -> "Response":
        return self.render(request, "message.html", status=400, title="This link does not work",
                           text=f"{e.message[:1].upper()}{e.message[1:]}. {e.hint}",
                           subscribe_link=True)

    def confirm(self, request: "Request", form: Any) -> "Response":
        token = _token(request, form)
        try:
            sub = self.subscriber_for("confirm", token)
            adding = None
        except TokenError as e:
            try:
                sub, adding = self.addition_for(token)
            except TokenError:
                return self.bad_link(request, e)
        manage = tokens.make(self.secret, "manage", sub.id, sub.token_version)
        ctx = {"sub": sub, "token": token, "manage_token": manage, "adding": adding}
        if form is None or (sub.state == "active" and adding is None):
            # GET never changes state: mail scanners prefetch links.
            return self.render(request, "confirm.html", done=False, **ctx)
        from .notify import subscribers

        if adding is not None:
            subscribers.add_following(self.store, sub.id, *adding)
        else:
            subscribers.confirm(self.store, sub.id)
        return self.render(request, "confirm.html", done=True, **ctx)

    def addition_for(self, token: str) -> "tuple[Subscriber, tuple[list[str], list[str]]]":
        """An "add" link: its active subscriber, and the trials and searches it adds (those
        still watched here). TokenError when the link is bad or she is no longer active."""
        data = tokens.read(self.secret, "add", token or "")
        sub = self.store.subscriber(data.subscriber_id)
        if sub is None or sub.token_version != data.version or sub.state != "active":
            raise TokenError("this link is no longer valid")
        watched = set(self.watched_ids())
        names = {sc.name for sc in self.config.searches}
        return sub, ([t for t in data.trials if t in watched], [n for n in data.searches if n in names])

    def manage(self, request: "Request", form: Any) -> "Response":
        token = _token(request, form)
        try:
            sub = self.subscriber_for("manage", token)
        except TokenError as e:
            return self.bad_link(request, e)
        if sub.state != "active":
            return self.render(request, "message.html", status=400, title="Not subscribed",
                               text="This address is not subscribed any more. You can subscribe again.",
                               subscribe_link=True)
        watched = self.watched_ids()
        current = _prefs_of(sub)
        # Keep offering what she already follows, even if the operator stopped watching it.
        choices = watched + [t for t in current["trials"] if t not in watched]
        links = {"sub": sub, "token": token,
                 "unsubscribe_token": tokens.make(self.secret, "unsubscribe", sub.id, sub.token_version)}
        if form is None:
            return self.prefs_form(request, "manage.html", choices, **links, **current)
        prefs, errors = self.read_prefs(form, choices)
        if errors:
            return self.prefs_form(request, "manage.html", choices, status=400, errors=errors, **links, **prefs)
        from .notify import subscribers

        subscribers.set_prefs(self.store, sub.id, prefs)
        return self.prefs_form(request, "manage.html", choices, saved=True, **links, **prefs)

    def unsubscribe(self, request: "Request", form: Any) -> "Response":
        from . import notify
        from .notify import subscribers

        token = _token(request, form)
        try:
            if form is not None:
                sub = notify.unsubscribe(self.store, self.config, token)
            else:
                sub = subscribers.unsubscribe_target(self.store, self.secret, token)
        except TokenError as e:
            return self.bad_link(request, e)
        manage = tokens.make(self.secret, "manage", sub.id, sub.token_version) if sub.state == "active" else ""
        return self.render(request, "unsubscribe.html", sub=sub, token=token, done=form is not None,
                           manage_token=manage)

    # -- the preferences form, shared by subscribe and manage -------------------------------
    def prefs_form(self, request: "Request", template: str, trial_ids: list[str], *, status: int = 200,
                   **ctx: Any) -> "Response":
        titles = self.store.trial_titles(trial_ids)
        ctx.setdefault("trials", [])
        ctx.setdefault("searches", [])
        ctx.setdefault("min_severity", "important")
        ctx.setdefault("digest", "each_poll")
        ctx.setdefault("location", "")
        return self.render(request, template, status=status,
                           trial_choices=[(n, titles.get(n)) for n in trial_ids],
                           search_choices=self.config.searches, **ctx)

    def read_prefs(self, form: Any, allowed_trials: list[str]) -> tuple[dict, list[str]]:
        errors: list[str] = []
        trials: list[str] = []
        for value in form.getlist("trials"):
            try:
                nct = rec.normalize_nct(str(value))
            except InvalidNctId:
                nct = None
            if nct is None or nct not in allowed_trials:
                # Only the operator adds trials to watch (config or CLI), never this form.
                errors.append(f"{str(value)[:20]} is not one of the trials watched here.")
            elif nct not in trials:
                trials.append(nct)
        names = {sc.name for sc in self.config.searches}
        searches = []
        for value in form.getlist("searches"):
            if value not in names:
                errors.append(f"{str(value)[:64]} is not one of the saved searches here.")
            elif value not in searches:
                searches.append(value)
        severity = form.get("min_severity", "important")
        digest = form.get("digest", "each_poll")
        if severity not in SEVERITIES:
            errors.append("Please choose which changes to be told about.")
            severity = "important"
        if digest not in DIGESTS:
            errors.append("Please choose how often to get email.")
            digest = "each_poll"
        if not trials and not searches and not errors:
            errors.append("Please choose at least one trial or saved search.")
        location = " ".join(str(form.get("location", "")).split())[:200]
        if location:
            from . import places
            from .errors import PlaceError

            try:
                places.resolve(location)  # an unknown or ambiguous place is her error to fix, never a guess
            except PlaceError as e:
                errors.append(f"Location: {e.message}. {e.hint or ''}".strip())
        return {"trials": trials, "searches": searches, "min_severity": severity, "digest": digest,
                "location": location}, errors


# -- helpers ----------------------------------------------------------------------------------

def _new_following(sub: "Subscriber", prefs: dict) -> tuple[list[str], list[str]] | None:
    """What an already active subscriber asks for beyond what she follows, or None when
    nothing is new (her mail then leads to the manage page, as before). It is added only
    once she confirms it from her mailbox, through a link that carries it."""
    have = _prefs_of(sub)
    adding = ([t for t in prefs["trials"] if t not in have["trials"]],
              [n for n in prefs["searches"] if n not in have["searches"]])
    return adding if adding[0] or adding[1] else None


def _prefs_of(sub: "Subscriber") -> dict:
    from .notify.subscribers import prefs_of

    return prefs_of(sub)


def _token(request: "Request", form: Any) -> str:
    value = (form.get("token") if form is not None else None) or request.query_params.get("token", "")
    return value if isinstance(value, str) else ""
