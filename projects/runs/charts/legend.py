"""A chart's key: a stroke of each series' CSS class and its name, in the top-right corner. Text is escaped here."""

from __future__ import annotations

from html import escape

from projects.runs.charts.axes import PAD_TOP

ROW = 14  # pixels from one entry to the next
STROKE = 24  # the sample stroke's length; the name starts 6 px after it
CHAR_WIDTH = 6.5  # a generous average width of an 11 px legend character, so a cut name fits its box


def fitted(name: str, room: float, tail: str = "") -> str:
    """`name` then `tail`, the name cut with an ellipsis where the two would run past `room` pixels."""
    most = max(int(room // CHAR_WIDTH) - len(tail), 4)
    return (name if len(name) <= most else name[: most - 1].rstrip() + "…") + tail


def legend_svg(right: float, entries: list[tuple[str, str, str]], width: int = 150) -> str:
    """The key for `entries` ((CSS class, name, tail) per series: "#12 faq-bot", " eval loss"), its right edge at
    `right`. A name too long for the box is cut with an ellipsis before its tail, and the whole of it is the
    entry's tooltip (its <title>)."""
    box_height = len(entries) * ROW + 6
    left = right - width
    room = width - STROKE - 6 - 4
    # An opaque box under the key, so a curve that runs through the corner does not strike through its labels.
    parts = [
        '<g class="legend">',
        f'<rect class="legend-box" x="{left - 4}" y="{PAD_TOP}" width="{width + 4}" height="{box_height}" rx="3"/>',
    ]
    for index, (css, name, tail) in enumerate(entries):
        y = PAD_TOP + 8 + index * ROW
        shown = fitted(name, room, tail)
        parts.append(f"<g><title>{escape(name + tail)}</title>" if shown != name + tail else "<g>")
        parts.append(f'<line class="{css}" x1="{left}" y1="{y}" x2="{left + STROKE}" y2="{y}"/>')
        # A nested <svg> clips its content: a name wider than estimated is cut at the box, never drawn past it.
        parts.append(
            f'<svg x="{left + STROKE + 6}" y="{y - 7}" width="{room}" height="{ROW}">'
            f'<text class="legend-label" x="0" y="11">{escape(shown)}</text></svg></g>'
        )
    parts.append("</g>")
    return "".join(parts)
