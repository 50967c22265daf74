"""The widget progress view: a bar per task prefix, live while the cell is blocked.

::

    notebook_sched · threads, 4 workers · 5200 / 10000 tasks · 1.3 s · 4,000 tasks/s, ~1 s left
    (on failure, in red:) task 'add-17' raised ZeroDivisionError: division by zero
    inc 5000 / 5000   [####################]
    add 200 / 5000    [#                   ]

Tasks the result cache answered count as done from the start, and the header and
their rows say how many, in purple (``CACHED_COLOUR``).

A row reads ``name done / total``; names longer than ``NAME_CHARS`` are shortened so
the counts always show (the full name is the tooltip), and Dask's ``finalize-...``
steps get no row.  The rate and the time left appear once the run is a second old
(``progress.RATE_AFTER``), as tqdm's do.  A failed row's name turns red and the row gets a red
outline, so the failure shows even when no task of that kind finished.

Built by the ticker thread of :class:`~notebook_sched.diagnostics.bar.ProgressBar`
when a run outlasts its delay, and updated by setting traits only: each changed trait
is one comm message that ipykernel sends from its IOPub thread, so updates reach the
front end while the kernel's main thread is still inside the compute.  Only traits
whose value changed are set, and a bar's ``value``, ``description`` (its counts) and
``bar_style`` change together in one message (``hold_sync``).  The view is few
widgets on purpose (an HTML header and one IntProgress per prefix): each widget is
three comm models, created while the compute runs.  Colours follow ipywidgets' bar
styles: running bars are blue, ``success`` (green) when the run is done, the failing
prefix ``danger`` (red) with the key and message in the header, ``warning`` when
interrupted.  The view stays
in the output after the run, like tqdm's notebook bar.

The box's text repr (what front ends without widget support show) is a short summary
line (:func:`short_line`); the display is re-sent once at the end
(``update_display_data``) so that fallback shows the final state.
"""

from __future__ import annotations

import html

import ipywidgets as widgets

from ..failure import key_repr, short_key_repr
from ..failure import short_name as _short_name
from .progress import DONE, FAILED, RUNNING, PrefixCount, Snapshot, rate_text

__all__ = ["WidgetView", "MAX_ROWS", "short_line", "short_name"]

MAX_ROWS = 12  # prefixes beyond this are summed in an "other" row
NAME_CHARS = 22  # longer prefix names are shortened so the counts stay visible
CACHED_COLOUR = "#7a3fb0"  # tasks the result cache answered


def short_line(snap: Snapshot) -> str:
    """The state in a few words, most important first (ipywidgets cuts reprs at 110)."""
    counts = f"{snap.done}/{snap.total} tasks in {snap.elapsed:.1f}s"
    if snap.state == FAILED:
        where = f"task {short_key_repr(snap.failed_key)} " if snap.failed_key is not None else ""
        return f"notebook_sched FAILED ({counts}): {where}raised {snap.error}"
    return f"notebook_sched {snap.state}: {counts}"


class _ProgressBox(widgets.VBox):
    """The view's container; its text repr is the text view's line."""

    line = ""

    def __repr__(self) -> str:
        return self.line or "<notebook_sched progress>"


def _rows(prefixes: list[PrefixCount]) -> list[PrefixCount]:
    # Dask's finalize steps (``finalize-hlgfinalizecompute``, one task that packs the
    # result) are bookkeeping, not work the user asked for: no row unless they fail.
    prefixes = [p for p in prefixes if p.failed or not p.name.startswith("finalize")]
    if len(prefixes) <= MAX_ROWS:
        return prefixes
    head = prefixes[: MAX_ROWS - 1]
    rest = prefixes[MAX_ROWS - 1 :]
    other = PrefixCount(
        f"other ({len(rest)})",
        sum(p.done for p in rest),
        sum(p.total for p in rest),
        any(p.failed for p in rest),
        sum(p.cached for p in rest),
    )
    return head + [other]


class _Row:
    """One prefix: an IntProgress whose description reads ``name done / total``.

    One widget per row (three comm models with its layout and style) keeps showing
    the view cheap: it is built while the compute runs.  A long name is shortened so
    the counts always fit (the full name is the row's tooltip); a failed row gets a
    red name and a red outline, visible even when none of its tasks finished.
    """

    def __init__(self, count: PrefixCount):
        self.name = count.name
        self.bar = widgets.IntProgress(
            value=count.done,
            min=0,
            max=max(count.total, 1),
            description=self._text(count),
            description_allow_html=True,
            tooltip=count.name,
            style={"description_width": "18em"},
            layout=widgets.Layout(width="auto", max_width="50em"),
        )

    @staticmethod
    def _text(count: PrefixCount) -> str:
        name = html.escape(short_name(count.name))
        if count.failed:
            name = f"<span style='color:#c00;font-weight:bold'>{name}</span>"
        cached = f" <span style='color:{CACHED_COLOUR}'>({count.cached} cached)</span>"
        return f"{name} {count.done} / {count.total}" + (cached if count.cached else "")

    def draw(self, count: PrefixCount, style: str) -> None:
        bar = self.bar
        value = min(count.done, bar.max)
        text = self._text(count)
        if bar.value != value or bar.bar_style != style or bar.description != text:
            with bar.hold_sync():  # one comm message for the three traits
                bar.value = value
                bar.bar_style = style
                bar.description = text
        if count.failed and style == "danger" and not bar.layout.border:
            bar.layout.border = "1px solid #c00"  # the failure shows at 0 done too


def short_name(name: str, limit: int = NAME_CHARS) -> str:
    """A long (fused) prefix name shortened as Dask's ``key_split`` reads it
    (``failure.short_name``): ``bag-from-delayed…part``; the full name is the tooltip."""
    return _short_name(name, limit)


class WidgetView:
    """Draws snapshots with ipywidgets (see module docstring)."""

    interval = 0.1

    def __init__(self, title: str = ""):
        self.title = title
        self.rows: list[_Row] = []
        self.header: widgets.HTML | None = None  # widgets exist only once shown:
        self.box: _ProgressBox | None = None  # each one costs comm_open messages
        self.handle = None  # the DisplayHandle of the shown box

    def build(self, snap: Snapshot) -> None:
        """Create the widgets for ``snap``'s prefixes (without displaying them)."""
        self.header = widgets.HTML()
        self.rows = [_Row(count) for count in _rows(snap.prefixes)]
        self.box = _ProgressBox([self.header, *(row.bar for row in self.rows)])
        self.update(snap)

    def show(self, snap: Snapshot) -> None:
        from IPython.display import display

        self.build(snap)
        self.handle = display(self.box, display_id=True)

    def update(self, snap: Snapshot) -> None:
        header = self._header(snap) + self._message(snap)
        if self.header.value != header:
            self.header.value = header
        for row, count in zip(self.rows, _rows(snap.prefixes), strict=False):
            row.draw(count, self._style(snap, count))
        self.box.line = short_line(snap)

    def final(self, snap: Snapshot) -> None:
        self.update(snap)
        if self.handle is not None:
            # Re-send the display: widget front ends keep the same live view, and the
            # text/plain fallback (front ends without widgets, saved outputs) now
            # reads the final line instead of the one from when the bar appeared.
            self.handle.update(self.box)

    @staticmethod
    def _style(snap: Snapshot, count: PrefixCount) -> str:
        if snap.state == RUNNING:
            return ""
        if snap.state == DONE:
            return "success"
        if snap.state == FAILED:
            return "danger" if count.failed else ""
        return "warning"

    def _header(self, snap: Snapshot) -> str:
        colour = {DONE: "green", FAILED: "#c00", RUNNING: "inherit"}.get(snap.state, "#b60")
        status = {DONE: "done", FAILED: "failed", RUNNING: ""}.get(snap.state, snap.state)
        status = html.escape(status)
        parts = [
            "<b>notebook_sched</b>",
            html.escape(self.title),
            f"{snap.done} / {snap.total} tasks",
            f"<span style='color:{CACHED_COLOUR}'>{snap.cached} cached</span>"
            if snap.cached
            else "",
            f"{snap.elapsed:.1f} s",
            rate_text(snap),
        ]
        if status:
            parts.append(f"<b style='color:{colour}'>{status}</b>")
        return " · ".join(p for p in parts if p)

    @staticmethod
    def _message(snap: Snapshot) -> str:
        if snap.state == FAILED and snap.error:
            full = html.escape(key_repr(snap.failed_key), quote=True)
            short = html.escape(short_key_repr(snap.failed_key))
            key = f"task <code title='{full}'>{short}</code> raised "
            where = key if snap.failed_key is not None else ""
            return f"<br><span style='color:#c00'>{where}{html.escape(snap.error)}</span>"
        return ""  # an interrupted or stopped run says so once, in the header

    def __repr__(self) -> str:
        return f"<WidgetView title={self.title!r} rows={len(self.rows)}>"
