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


def _fills(view: DigestView) -> tuple[tuple, dict[str, str]] | None:
    """(the frame's shape, each stand-in's value for this view); None when a value cannot be
    filled in. The shape is what the frame's templates branch on: which values are empty
    (None or "", said as they are) and how many reasons there are."""
    shape: list[Any] = []
    fills: dict[str, str] = {}
    for name in FRAME_FIELDS:
        value = getattr(view, name)
        if isinstance(value, tuple):
            shape.append(tuple(True if item else item for item in value))
            fills.update((_stand_in(name, i), item) for i, item in enumerate(value) if item)
        elif value:
            shape.append(True)
            fills[_stand_in(name, 0)] = value
        else:
            shape.append(value)
    # One check of every value at once (a space joins them: plain itself).
    if not all(isinstance(v, str) for v in fills.values()) or not _plain(" ".join(fills.values())):
        return None
    return tuple(shape), fills


@functools.lru_cache(maxsize=64)
def _stand_in(name: str, i: int) -> str:
    return f"Tw{name}{i}Qx7"


_STAND_INS = re.compile(r"(Tw[a-z_]+\d+Qx7)")


@dataclass(frozen=True)
class Frame:
    """A frame rendered with stand-ins and cut at them: (text before the cards, after them)
    for each part, as literal text at even places and stand-ins at odd ones."""

    text: tuple[tuple[str, ...], tuple[str, ...]]
    html: tuple[tuple[str, ...], tuple[str, ...]]

    @staticmethod
    def cut(rendered: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        head, _, tail = rendered.partition(MARK)
        return tuple(_STAND_INS.split(head)), tuple(_STAND_INS.split(tail))


def _filled(parts: tuple[str, ...], fills: dict[str, str]) -> str:
    out = list(parts)
    out[1::2] = [fills[s] for s in parts[1::2]]
    return "".join(out)


class Renderings:
    """The cards and frames of one send (``compose_digests`` makes one per send)."""

    def __init__(self, config: "Config", facts: dict[str, TrialFacts], places: dict | None = None) -> None:
        self.config, self.facts = config, facts
        self.places = {} if places is None else places
        self._cards: dict[tuple, Card] = {}
        self._by_view: dict[int, Card] = {}   # id(card.view) -> card, for render()
        self._frames: dict[tuple, Frame] = {}

    def view(self, sub: Subscriber, changes: list[ChangeRow], *, now: dt.datetime,
             links: tuple[str, str]) -> DigestView:
        """Her digest as data (``digest.build_view``), each trial's view shared with readers alike."""
        followed, searches = followed_by(sub, "trial"), followed_by(sub, "search")

        def trial(nct: str, cs: list[ChangeRow], place: Any) -> TrialView:
            facts = self.facts.get(nct)
            if any(c.id is None for c in cs):  # not stored: nothing identifies it, built alone
                return trial_view(sub, nct, cs, facts, place)
            # Everything trial_view reads of her: whether she follows it, her searches it is
            # in, her place. The changes and the trial's facts are the same for the whole send.
            key = (nct, tuple(c.id for c in cs), nct in followed,
                   her_searches(sub, cs, facts.memberships if facts else frozenset(), searches), place)
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
        shared = _fills(view)
        if shared is None:
            return render(view)
        shape, fills = shared
        frame = self._frames.get(shape)
        if frame is None:
            frame = self._frames[shape] = self._frame(view)
        cards = [self._by_view.get(id(t)) for t in view.trials]
        cards = [c if c is not None and c.view is t else self._card(t) for c, t in zip(cards, view.trials)]
        (text_head, text_tail), (html_head, html_tail) = frame.text, frame.html
        text = (_filled(text_head, fills), *(c.text for c in cards), _filled(text_tail, fills))
        html = (_filled(html_head, fills), *(c.html for c in cards), _filled(html_tail, fills))
        return Rendered(subject=view.subject, text="".join(text), html="".join(html), pieces=(text, html))

    @staticmethod
    def _card(t: TrialView) -> Card:
        env = environment()
        # Cleaned on its own, as digest.txt.j2 cleans each trial's text.
        text = untrusted.strip_controls(env.get_template("email/_trial.txt.j2").render(t=t))
        return Card(t, text, _inliner()(env.get_template("email/_trial.html.j2").render(t=t)))

    @staticmethod
    def _frame(view: DigestView) -> Frame:
        """As digest.render, with stand-ins for the values and the cards' place marked."""
        stand = {}
        for name in FRAME_FIELDS:
            value = getattr(view, name)
            items = tuple(_stand_in(name, i) if item else item
                          for i, item in enumerate(value if isinstance(value, tuple) else (value,)))
            stand[name] = items if isinstance(value, tuple) else items[0]
        ctx = {f.name: getattr(view, f.name) for f in dataclasses.fields(view)} | stand | {"blocks": MARK}
        text = untrusted.strip_controls(environment().get_template("email/digest.txt.j2").render(**ctx))
        return Frame(Frame.cut(text), Frame.cut(render_html("email/digest.html.j2", ctx)))
