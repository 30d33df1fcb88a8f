"""docs/reference/settings.rst agrees with the settings table in stomp_cluster.conf.

The reference page is written by hand, for its advice; its facts come from the table.
Each row of its list-tables is ``Key | Default | Accepts | Advice``:

* the keys are exactly those of the table, each once;
* the first literal of Default is the key's default (``None`` may be followed by what it
  works out to, and a number by a gloss such as "(a day)");
* Accepts is, word for word, what the key's row accepts (the hint of check E003);
* Advice starts with the row's one line of documentation.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

from stomp_cluster.conf import DEFAULTS, Setting, StompSettings

PAGE = Path(__file__).resolve().parent.parent / "docs" / "reference" / "settings.rst"

ROWS: dict[str, Setting] = {
    f.name: f.metadata["stomp_cluster"] for f in dataclasses.fields(StompSettings)
}


def list_table_rows(text: str) -> list[list[str]]:
    """The rows of every ``list-table`` in ``text``, each a list of cell texts."""
    rows: list[list[str]] = []
    indent = None
    for line in text.splitlines():
        row = re.match(r"^(\s*)\* - (.*)$", line)
        cell = re.match(r"^(\s*)- (.*)$", line)
        if row:
            indent = len(row.group(1))
            rows.append([row.group(2)])
        elif indent is not None and cell and len(cell.group(1)) == indent + 2:
            rows[-1].append(cell.group(2))
        elif indent is not None and line.startswith(" " * (indent + 4)) and line.strip():
            rows[-1][-1] += " " + line.strip()
        else:
            indent = None
    return rows


def plain(rst: str) -> str:
    """``rst`` as it reads once rendered: no literal markup, roles as their link text."""

    def role(match: re.Match[str]) -> str:
        kind, target = match.group(1), match.group(2)
        name = target.rsplit(".", 1)[-1] if target.startswith("~") else target.lstrip("~")
        return name + "()" if kind in ("func", "meth") else name

    rst = re.sub(r":(?:py:)?(\w+):`([^`<]+)`", role, rst)
    return " ".join(rst.replace("``", "").split())


def documented() -> dict[str, list[str]]:
    rows = [r for r in list_table_rows(PAGE.read_text()) if r[0] != "Key"]
    keys = [plain(r[0]) for r in rows]
    assert len(keys) == len(set(keys)), "a key is documented twice"
    for r in rows:
        assert len(r) == 4, f"row {r[0]} should have Key, Default, Accepts and Advice"
    return {plain(r[0]): r[1:] for r in rows}


def test_every_key_is_documented_and_no_other():
    assert sorted(documented()) == sorted(DEFAULTS)


@pytest.mark.parametrize("key", list(DEFAULTS))
def test_documented_default(key):
    default, _, _ = documented()[key]
    literal = re.match(r"``(.+?)``", default)
    assert literal, f"{key}: the Default column should start with a ``literal``"
    value = ast.literal_eval(literal.group(1))
    assert value == DEFAULTS[key] and type(value) is type(DEFAULTS[key])


@pytest.mark.parametrize("key", list(DEFAULTS))
def test_documented_accepts_is_the_check_hint(key):
    _, accepts, _ = documented()[key]
    assert plain(accepts) == ROWS[key].accepts


@pytest.mark.parametrize("key", list(DEFAULTS))
def test_documented_advice_starts_with_the_tables_line(key):
    _, _, advice = documented()[key]
    assert plain(advice).startswith(ROWS[key].doc.rstrip("."))


def test_the_parser_reads_a_list_table():
    text = """
.. list-table::

   * - ``A``
     - ``1``
     - a number,
       positive
     - Advice.

Prose.
"""
    assert list_table_rows(text) == [["``A``", "``1``", "a number, positive", "Advice."]]
