"""The three output formats' symbols, escaping and markup (markdown, LaTeX, HTML)."""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["DAGGER", "EMPTY", "HTML", "MD", "TEX", "Style"]

EMPTY = "—"
DAGGER = "†"


@dataclass(frozen=True)
class Style:
    """How one output format writes the table's symbols, escapes text and marks it up."""

    pm: str
    dagger: str
    empty: str
    up: str
    down: str
    geq: str
    lt: str
    esc: Callable[[str], str]
    bold: Callable[[str], str]
    code: Callable[[str], str]
    italic: Callable[[str], str]


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


_TEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "±": r"$\pm$",
    "†": r"$^\dagger$",
    "—": "---",
    "·": r"$\cdot$",
    "↑": r"$\uparrow$",
    "↓": r"$\downarrow$",
    "≥": r"$\geq$",
}


def _tex_escape(text: str) -> str:
    return "".join(_TEX_SPECIALS.get(ch, ch) for ch in text)


MD = Style(
    pm="±",
    dagger=DAGGER,
    empty=EMPTY,
    up="↑",
    down="↓",
    geq="≥",
    lt="<",
    esc=_md_escape,
    bold=lambda s: f"**{s}**",
    code=lambda s: f"`{s}`",
    italic=lambda s: f"*{s}*",
)
TEX = Style(
    pm="$\\pm$",
    dagger="$^\\dagger$",
    empty="---",
    up="$\\uparrow$",
    down="$\\downarrow$",
    geq="$\\geq$",
    lt="$<$",
    esc=_tex_escape,
    bold=lambda s: f"\\textbf{{{s}}}",
    code=lambda s: f"\\texttt{{{_tex_escape(s)}}}",
    italic=lambda s: f"\\textit{{{s}}}",
)


def _html_escape(text: str) -> str:
    return html.escape(text, quote=True)


HTML = Style(
    pm="±",
    dagger=DAGGER,
    empty=EMPTY,
    up="↑",
    down="↓",
    geq="≥",
    lt="&lt;",
    esc=_html_escape,
    bold=lambda s: f"<strong>{s}</strong>",
    code=lambda s: f"<code>{_html_escape(s)}</code>",
    italic=lambda s: f"<em>{s}</em>",
)
