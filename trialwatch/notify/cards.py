"""One send's renderings, shared: each trial's card rendered once, each digest assembled from them.

A digest is a frame (greeting, intro, footer, links) around one card per trial. A card depends
only on the trial's changes in her digest, whether she follows the trial, which of her saved
searches it is in, and her place; readers alike in those share one ``TrialView`` and one
rendering of it (its text, and its HTML with the CSS inlined as a fragment). The frame is
rendered once per shape with stand-ins for what is hers (subject, name, intro, footer, links)
and filled in per reader. A value that HTML escaping or the inliner's serialiser would rewrite
cannot be filled in: that digest's frame is rendered for her alone (``digest.render``).

Either way the bytes are those ``digest.render(view)`` gives for the same view, which renders
the whole document at once; tests/test_cards.py checks it on real records.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import untrusted
from ..store import ChangeRow, Subscriber
from .digest import (
    DigestView,
    Rendered,
    TrialFacts,
    TrialView,
    build_view,
    css_inliner,
    environment,
    followed_by,
    her_searches,
    render,
    render_html,
    trial_view,
)

if TYPE_CHECKING:
    from ..config import Config

# Where the cards go in a frame. Plain letters: neither escaping nor the inliner alters them.
MARK = "TwCardsQx7"
# Cards kept during one send (oldest dropped first): memory stays bounded however many
# distinct cards a send has.
CARDS_MAX = 2048
# The DigestView fields the frame shows; each is a stand-in in the shared frame.
FRAME_FIELDS = ("subject", "preheader", "name", "intro", "reasons", "severity_words", "digest_words",
                "unsubscribe_url", "manage_url", "public_url", "generated_at")


@dataclass(frozen=True)
class Card:
    view: TrialView
    text: str
    html: str


@functools.lru_cache(maxsize=1)
def _inliner() -> Any:
    # digest.render_html's inliner, given the style sheet _base.html.j2 includes.
    css = environment().get_template("email/_style.css").render()
    return functools.partial(css_inliner().inline_fragment, css=css)


_UNPLAIN = re.compile(r"[&<>\"']|Qx7")


def _plain(value: str) -> bool:
    """Text that reads the same in the text part and the HTML after escaping and the inliner's
    serialiser: printable, nothing to escape, no stand-in inside."""
    return value.isprintable() and not _UNPLAIN.search(value)


def _stand_ins(view: DigestView) -> tuple[tuple, dict[str, Any], list[tuple[str, str]]] | None:
    """(the frame's shape, the view's frame fields as stand-ins, (stand-in, value) pairs to
    fill in); None when a value cannot be filled in."""
    shape: list[Any] = []
    values: dict[str, Any] = {}
    fills: list[tuple[str, str]] = []
    for name in FRAME_FIELDS:
        value = getattr(view, name)
        items = value if isinstance(value, tuple) else (value,)
        stand = [f"Tw{name}{i}Qx7" if item else item for i, item in enumerate(items)]
        fills += [(s, item) for s, item in zip(stand, items) if item]
        # None or "" is said as it is, part of the shape.
        shape.append(tuple(True if item else item for item in items))
        values[name] = tuple(stand) if isinstance(value, tuple) else stand[0]
    # One check of every value at once (a space joins them: plain itself).
    if not all(isinstance(v, str) for _, v in fills) or not _plain(" ".join(v for _, v in fills)):
        return None
    return tuple(shape), values, fills


def _around(frame: str, cards: list[str]) -> tuple[str, ...]:
    """The frame's text before its mark, the cards, the frame's text after."""
    head, _, tail = frame.partition(MARK)
    return (head, *cards, tail)


class Renderings:
    """The cards and frames of one send (``compose_digests`` makes one per send)."""

    def __init__(self, config: "Config", facts: dict[str, TrialFacts], places: dict | None = None) -> None:
        self.config, self.facts = config, facts
        self.places = {} if places is None else places
        self._cards: dict[tuple, Card] = {}
        self._by_view: dict[int, Card] = {}   # id(card.view) -> card, for render()
        self._frames: dict[tuple, tuple[str, str]] = {}

    def view(self, sub: Subscriber, changes: list[ChangeRow], *, now: dt.datetime,
             links: tuple[str, str]) -> DigestView:
        """Her digest as data (``digest.build_view``), each trial's view shared with readers alike."""
        followed = followed_by(sub, "trial")

        def trial(nct: str, cs: list[ChangeRow], place: Any) -> TrialView:
            facts = self.facts.get(nct)
            if any(c.id is None for c in cs):  # not stored: nothing identifies it, built alone
                return trial_view(sub, nct, cs, facts, place)
            # Everything trial_view reads of her: whether she follows it, her searches it is
            # in, her place. The changes and the trial's facts are the same for the whole send.
            key = (nct, tuple(c.id for c in cs), nct in followed,
                   her_searches(sub, cs, facts.memberships if facts else frozenset()), place)
            card = self._cards.get(key)
            if card is None:
                card = self._card(trial_view(sub, nct, cs, facts, place))
                self._cards[key] = self._by_view[id(card.view)] = card
                if len(self._cards) > CARDS_MAX:
                    self._by_view.pop(id(self._cards.pop(next(iter(self._cards))).view))
            return card.view

        return build_view(self.config, sub, changes, self.facts, now=now, places=self.places, links=links,
                          trial=trial)

    def render(self, view: DigestView) -> Rendered:
        """What ``digest.render(view)`` gives, from the shared cards and frame."""
        shared = _stand_ins(view)
        if shared is None:
            return render(view)
        shape, values, fills = shared
        frame = self._frames.get(shape)
        if frame is None:
            frame = self._frames[shape] = self._frame(dataclasses.replace(view, **values))
        text, html = frame
        for stand_in, value in fills:
            text, html = text.replace(stand_in, value), html.replace(stand_in, value)
        cards = [self._by_view.get(id(t)) for t in view.trials]
        cards = [c if c is not None and c.view is t else self._card(t) for c, t in zip(cards, view.trials)]
        text_pieces = _around(text, [c.text for c in cards])
        html_pieces = _around(html, [c.html for c in cards])
        return Rendered(subject=view.subject, text="".join(text_pieces), html="".join(html_pieces),
                        pieces=(text_pieces, html_pieces))

    @staticmethod
    def _card(t: TrialView) -> Card:
        env = environment()
        # Cleaned on its own, as digest.txt.j2 cleans each trial's text.
        text = untrusted.strip_controls(env.get_template("email/_trial.txt.j2").render(t=t))
        return Card(t, text, _inliner()(env.get_template("email/_trial.html.j2").render(t=t)))

    @staticmethod
    def _frame(view: DigestView) -> tuple[str, str]:
        # As digest.render, with the cards' place marked.
        ctx = {f.name: getattr(view, f.name) for f in dataclasses.fields(view)} | {"blocks": MARK}
        text = untrusted.strip_controls(environment().get_template("email/digest.txt.j2").render(**ctx))
        return text, render_html("email/digest.html.j2", ctx)
