"""The table as markdown, LaTeX and HTML, all three laid out from one cell grid.

:func:`grid` writes every header label, body cell and note once, in a format's
:class:`~lstm_harness.reporting.styles.Style`; :func:`markdown`, :func:`latex` and :func:`html`
only lay that grid out (LaTeX groups its header into task / metric [/ variant] levels).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lstm_harness import run_schema as rs
from lstm_harness.reporting.formatting import (
    cell_text,
    column_decimals,
    cost_label,
    cost_text,
    diag_text,
    metric_label,
    reference_text,
)
from lstm_harness.reporting.notes import table_notes
from lstm_harness.reporting.styles import HTML, MD, TEX, Style

if TYPE_CHECKING:
    from lstm_harness.reporting.table import Table

__all__ = ["Grid", "GridRow", "grid", "html", "latex", "markdown"]


@dataclass
class GridRow:
    """One body line: its cells (label first) and its kind: "row", "baseline" or
    "reference"."""

    cells: list[str]
    kind: str = "row"


@dataclass
class Grid:
    """A table written out in one style: flat header labels, body lines and notes."""

    caption: str
    header: list[str]
    rows: list[GridRow]
    notes: list[str]


def grid(table: Table, style: Style) -> Grid:
    """Every label, cell and note of ``table`` as text of ``style`` (escaped)."""
    decimals, n, esc = column_decimals(table), table.common_n, style.esc
    header = [esc(table.layout.row_header)]
    for task, metric, variant in table.columns:
        label = f"{esc(task)} · {metric_label(table, metric, style)}"
        header.append(label + (f" · {esc(variant)}" if variant is not None else ""))
    header += [esc(cost_label(key)) for key in table.cost_keys]
    header += [esc(rs.DIAG_METRICS[key]) for key in table.diag_keys]
    rows = []
    for row in table.rows:
        is_baseline = row == table.baseline and len(table.rows) > 1
        out = [esc(row) + (" (baseline)" if is_baseline else "")]
        out += [cell_text(table.cells[(row, c)], decimals[c], n, style) for c in table.columns]
        out += [esc(cost_text(key, table.costs[row][key])) for key in table.cost_keys]
        out += [esc(diag_text(table, row, key)) for key in table.diag_keys]
        rows.append(GridRow(out, "baseline" if is_baseline else "row"))
    for row, values in table.references.items():
        out = [style.italic(esc(row))]
        out += [reference_text(values.get(c), decimals[c], style) for c in table.columns]
        out += [style.empty] * (len(table.cost_keys) + len(table.diag_keys))
        rows.append(GridRow(out, "reference"))
    return Grid(esc(table.caption), header, rows, table_notes(table, style))


# --------------------------------------------------------------------------------------------
# markdown


def markdown(table: Table) -> str:
    """GitHub markdown: caption line, table, notes (failed trials nested under their
    heading)."""
    g = grid(table, MD)
    align = ["---"] + [":---:"] * len(table.columns)
    align += ["---:"] * (len(table.cost_keys) + len(table.diag_keys))
    lines = [f"**Table.** {g.caption}", "", _md_row(g.header), _md_row(align)]
    lines += [_md_row(row.cells) for row in g.rows]
    lines.append("")
    for note in g.notes:
        lines.append(f"- {note}" if not note.startswith("`") else f"  - {note}")
    return "\n".join(lines) + "\n"


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


# --------------------------------------------------------------------------------------------
# LaTeX


def latex(table: Table) -> str:
    """A booktabs ``table`` environment with the notes under the tabular."""
    g = grid(table, TEX)
    ncols, ncost, ndiag = len(table.columns), len(table.cost_keys), len(table.diag_keys)
    spec = "l" + "c" * ncols + "r" * (ncost + ndiag)
    lines = [
        "% requires \\usepackage{booktabs}",
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{g.caption}}}",
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        *_latex_header(table, g),
        "\\midrule",
    ]
    body = [row for row in g.rows if row.kind != "reference"]
    references = [row for row in g.rows if row.kind == "reference"]
    lines += [" & ".join(row.cells) + " \\\\" for row in body]
    if references:
        lines.append("\\midrule")
    lines += [" & ".join(row.cells) + " \\\\" for row in references]
    lines += ["\\bottomrule", "\\end{tabular}", "", "\\smallskip", "{\\footnotesize"]
    lines += [note + " \\\\" for note in g.notes]
    lines += ["}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def _spans(keys: list[object]) -> list[tuple[object, int]]:
    """Runs of equal consecutive keys as (key, length)."""
    return [(key, len(list(group))) for key, group in itertools.groupby(keys)]


def _latex_header(table: Table, g: Grid) -> list[str]:
    """Header levels: tasks, then metrics, then column variants (with a column axis), each
    spanning its columns with a rule under it; "cost" and "diagnostics" span their columns on
    the first level and the last level names them (the grid's labels)."""
    ncols, ncost, ndiag = len(table.columns), len(table.cost_keys), len(table.diag_keys)
    levels: list[list[object]] = [[c[0] for c in table.columns], [c[:2] for c in table.columns]]
    if table.layout.columns is not None:
        levels.append(list(table.columns))
    lines = []
    for depth, keys in enumerate(levels):
        last = depth == len(levels) - 1
        out = [g.header[0] if last else ""]
        rules, start = [], 2
        for key, width in _spans(keys):
            if depth == 0:
                text = TEX.esc(str(key))
            elif depth == 1:
                text = metric_label(table, key[1], TEX)  # type: ignore[index]
            else:
                text = TEX.esc(str(key[2]))  # type: ignore[index]
            out.append(f"\\multicolumn{{{width}}}{{c}}{{{text}}}" if width > 1 else text)
            if not last:
                rules.append(f"\\cmidrule(lr){{{start}-{start + width - 1}}}")
            start += width
        extra = g.header[1 + ncols:]
        for name, count, labels in (("cost", ncost, extra[:ncost]),
                                    ("diagnostics", ndiag, extra[ncost:])):
            if depth == 0 and count:
                out.append(f"\\multicolumn{{{count}}}{{c}}{{{name}}}" if count > 1 else name)
                rules.append(f"\\cmidrule(lr){{{start}-{start + count - 1}}}")
            elif last:
                out += labels
            else:
                out += [""] * count
            start += count
        lines.append(" & ".join(out) + " \\\\")
        if rules:
            lines.append(" ".join(rules))
    return lines


# --------------------------------------------------------------------------------------------
# HTML


def html(table: Table) -> str:
    """An HTML fragment: ``<table class="ablation">`` with caption, then the notes as a
    ``<ul class="notes">`` (failed trials nested under their heading)."""
    g = grid(table, HTML)
    lines = ['<table class="ablation">', f"<caption>{g.caption}</caption>", "<thead>",
             _html_row(g.header, "th"), "</thead>", "<tbody>"]
    lines += [_html_row(row.cells, cls="" if row.kind == "row" else row.kind) for row in g.rows]
    lines += ["</tbody>", "</table>", '<ul class="notes">']
    items: list[tuple[str, list[str]]] = []
    for note in g.notes:
        if note.startswith("<code>") and items:  # a failed trial: nested under its heading
            items[-1][1].append(note)
        else:
            items.append((note, []))
    for note, children in items:
        inner = "".join(f"<li>{child}</li>" for child in children)
        lines.append(f"<li>{note}" + (f"<ul>{inner}</ul>" if children else "") + "</li>")
    lines.append("</ul>")
    return "\n".join(lines) + "\n"


def _html_row(cells: list[str], tag: str = "td", cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<tr{attr}>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>"
