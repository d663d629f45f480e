"""The report as a document: blocks (heading, paragraph, list, table, image, code) rendered as
GitHub-flavoured Markdown or one self-contained HTML page."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Block", "render_markdown", "render_html"]


@dataclass(frozen=True)
class Block:
    """One piece of a report: ``kind`` is heading, paragraph, list, table, image or code."""

    kind: str
    text: str = ""
    level: int = 2
    items: tuple[str, ...] = ()
    header: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    src: str = ""



def render_markdown(blocks: Sequence[Block]) -> str:
    """Render report blocks as GitHub-flavoured Markdown."""
    out: list[str] = []
    for block in blocks:
        if block.kind == "heading":
            out.append(f"{'#' * block.level} {block.text}")
        elif block.kind == "paragraph":
            out.append(block.text)
        elif block.kind == "list":
            out.append("\n".join(f"- {item}" for item in block.items))
        elif block.kind == "image":
            out.append(f"![{block.text}]({block.src})\n\n*{block.text}*")
        elif block.kind == "table":
            lines = ["| " + " | ".join(block.header) + " |",
                     "|" + "|".join(" --- " for _ in block.header) + "|"]
            lines.extend("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
                         for row in block.rows)
            out.append("\n".join(lines))
        elif block.kind == "code":
            out.append(f"```\n{block.text}\n```")
    return "\n\n".join(out) + "\n"


def _inline_html(text: str) -> str:
    """Escape text and turn Markdown ``**bold**`` and ```code``` spans into tags."""
    escaped = html.escape(text)
    for mark, tag in (("**", "strong"), ("`", "code")):
        parts = escaped.split(mark)
        if len(parts) % 2 == 1:
            escaped = "".join(f"<{tag}>{p}</{tag}>" if i % 2 else p
                              for i, p in enumerate(parts))
    return escaped


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 980px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; font-size: 0.9em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; }
td:nth-child(2), th:nth-child(2) { text-align: left; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; }
figcaption { font-size: 0.9em; color: #444; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""


def render_html(blocks: Sequence[Block], title: str = "featstore report") -> str:
    """Render report blocks as one self-contained HTML page (images linked by relative path)."""
    body: list[str] = []
    for block in blocks:
        if block.kind == "heading":
            body.append(f"<h{block.level}>{_inline_html(block.text)}</h{block.level}>")
        elif block.kind == "paragraph":
            body.append(f"<p>{_inline_html(block.text)}</p>")
        elif block.kind == "list":
            body.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in block.items)
                        + "</ul>")
        elif block.kind == "image":
            body.append(f'<figure><img src="{html.escape(block.src)}" '
                        f'alt="{html.escape(block.text)}"><figcaption>'
                        f"{_inline_html(block.text)}</figcaption></figure>")
        elif block.kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block.header)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                           for row in block.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif block.kind == "code":
            body.append(f"<pre><code>{html.escape(block.text)}</code></pre>")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")

