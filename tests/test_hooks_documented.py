"""Datasette's rule: every plugin hook is documented in docs/plugins.md under its own
`### name(args)` heading, and has a test named `test_hook_<name>` somewhere in tests/."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pluggy
import pytest

from mmagent import hookspecs

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "plugins.md"
TESTS = Path(__file__).resolve().parent


def declared_hooks() -> dict[str, list[str]]:
    """{hook name: argument names} for every function marked with `@hookspec` in mmagent.hookspecs."""
    return {
        name: list(inspect.signature(func).parameters)
        for name, func in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(func, "mmagent_spec")
    }


HOOKS = declared_hooks()


def test_hooks_are_found():
    assert HOOKS, "no hookspecs found in mmagent.hookspecs"
    pm = pluggy.PluginManager("mmagent")
    pm.add_hookspecs(hookspecs)
    seen_by_pluggy = {name: list(caller.spec.argnames) for name, caller in vars(pm.hook).items()
                      if isinstance(caller, pluggy.HookCaller) and caller.spec is not None}
    assert seen_by_pluggy == HOOKS


def doc_headings() -> list[str]:
    return [m.group(1) for m in re.finditer(r"^###\s+`?([^`\n]+?)`?\s*$", DOCS.read_text(encoding="utf-8"), re.M)]


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_hook_is_documented(hook):
    expected = f"{hook}({', '.join(HOOKS[hook])})"
    assert expected in doc_headings(), f"docs/plugins.md needs a '### {expected}' section"


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_hook_has_a_test(hook):
    pattern = re.compile(rf"^\s*def test_hook_{re.escape(hook)}\s*\(", re.M)
    files = [p for p in sorted(TESTS.rglob("*.py")) if pattern.search(p.read_text(encoding="utf-8"))]
    assert files, f"no test function named test_hook_{hook} in tests/"


def test_documented_hooks_exist():
    """The reverse: every `### name(args)` heading in the "## Hooks" section is a real hook with those
    arguments (no stale or misspelt sections)."""
    text = DOCS.read_text(encoding="utf-8")
    match = re.search(r"^## Hooks\s*$(.*?)(?=^## )", text, re.M | re.S)
    assert match, 'docs/plugins.md needs a "## Hooks" section'
    documented = re.findall(r"^###\s+`?(\w+)\(([^)]*)\)`?\s*$", match.group(1), re.M)
    assert {name: [a.strip() for a in args.split(",") if a.strip()] for name, args in documented} == HOOKS
