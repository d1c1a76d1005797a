"""No SQL is built by string formatting in the package: every value is a bound parameter.

ruff's S608 catches ``SELECT``/``INSERT``/``UPDATE``/``DELETE`` built with f-strings,
``%``, ``.format`` or ``+``; this check extends the rule to every ClickHouse statement
(DDL included) and to ``{name:Identifier}``-style server-side binding being the only
way an identifier gets in.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "services" / "runstream"
SQL = re.compile(
    r"\b(SELECT|INSERT INTO|ALTER TABLE|CREATE (?:TABLE|VIEW|DATABASE|MATERIALIZED VIEW)|DROP|OPTIMIZE TABLE|"
    r"TRUNCATE|RENAME|DELETE FROM|EXCHANGE|GRANT|SYSTEM|WHERE|FROM [a-z_{])"
)


def _texts(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def formatted_sql(source: str, filename: str = "<source>") -> list[str]:
    """Places where a string that reads as SQL is built by formatting: ``file:line: what``."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        how = None
        if isinstance(node, ast.JoinedStr) and any(isinstance(v, ast.FormattedValue) for v in node.values):
            how = "f-string"
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
            if isinstance(node.left, ast.Constant | ast.JoinedStr) or isinstance(node.right, ast.Constant):
                how = "% or + on a string"
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "format"
            and isinstance(node.func.value, ast.Constant)
        ):
            how = "str.format"
        if how and any(SQL.search(text) for text in _texts(node)):
            found.append(f"{filename}:{getattr(node, 'lineno', '?')}: SQL built with {how}")
    return found


def test_the_check_finds_sql_built_by_formatting() -> None:
    bad = """
def a(ws): return f"SELECT * FROM runs WHERE workspace = '{ws}'"
def b(db): return "DROP DATABASE %s" % db
def c(t): return "ALTER TABLE {} DELETE WHERE 1".format(t)
def d(x): return "SELECT " + x
"""
    assert len(formatted_sql(bad)) == 4
    good = """
QUERY = "SELECT * FROM runs WHERE workspace = {ws:String}"
def e(name): return f"no query here, just {name}"
def f(db): return client.command("DROP DATABASE IF EXISTS {db:Identifier}", parameters={"db": db})
"""
    assert formatted_sql(good) == []


def test_no_sql_in_the_package_is_built_by_formatting() -> None:
    found: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        found += formatted_sql(path.read_text("utf-8"), str(path.relative_to(PACKAGE.parent)))
    assert found == [], "bind values as parameters ({name:Type}) instead:\n" + "\n".join(found)
