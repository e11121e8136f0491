"""A chart's key: a stroke of each series' CSS class and its name, in the top-right corner. Text is escaped here."""

from __future__ import annotations

from html import escape

from projects.runs.charts.axes import PAD_TOP


def legend_svg(right: float, entries: list[tuple[str, str]], width: int = 150) -> str:
    """The key for `entries` ((CSS class, name) per series), its right edge at `right`."""
    box_height = len(entries) * 14 + 6
    # An opaque box under the key, so a curve that runs through the corner does not strike through its labels.
    parts = [
        '<g class="legend">',
        f'<rect class="legend-box" x="{right - width - 4}" y="{PAD_TOP}" width="{width + 4}" '
        f'height="{box_height}" rx="3"/>',
    ]
    for index, (css, name) in enumerate(entries):
        y = PAD_TOP + 8 + index * 14
        parts.append(f'<line class="{css}" x1="{right - width}" y1="{y}" x2="{right - width + 24}" y2="{y}"/>')
        parts.append(f'<text class="legend-label" x="{right - width + 30}" y="{y + 4}">{escape(name)}</text>')
    parts.append("</g>")
    return "".join(parts)
