"""No page can run before the login, whatever reached it: Streamlit's legacy discovery runs any
file of a `pages/` folder next to the script directly (before the script has built its
navigation), so the script lives where there is no such folder, and every page is one the shell
builds its navigation from after resolving the session."""

from __future__ import annotations

import ast
from pathlib import Path

from config import PROJECT_ROOT
from dashboard.shell import PAGES


def _served_script() -> Path:
    """The script app.py's st.App serves."""
    tree = ast.parse((PROJECT_ROOT / "app.py").read_text())
    [call] = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "App"
    ]
    first = call.args[0]
    assert isinstance(first, ast.Constant) and isinstance(first.value, str)
    return PROJECT_ROOT / first.value


def test_the_script_has_no_pages_folder_beside_it() -> None:
    script = _served_script()
    assert script.is_file()
    assert not (script.parent / "pages").exists()


def test_every_page_file_is_in_the_navigation() -> None:
    files = {
        p.stem for p in (PROJECT_ROOT / "pages").glob("*.py") if p.stem not in ("__init__", "ui")
    }
    assert files == {name for _, name, *_ in PAGES}


def test_no_page_refreshes_on_its_own_without_rechecking_the_session() -> None:
    """A fragment's own runs skip the navigation's check: pages use pages.ui.refreshing."""
    for path in (PROJECT_ROOT / "pages").glob("*.py"):
        if path.stem == "ui":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and any(k.arg == "run_every" for k in node.keywords):
                raise AssertionError(f"{path.name}:{node.lineno} refreshes without the check")
