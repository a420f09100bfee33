"""Dependencies point one way: capsacc imports no other nascaps package, rtl only capsacc (its array
configuration `capsacc.array`, its file utilities `capsacc.files`), sim only rtl and capsacc, nas only
capsacc."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("capsacc", "nas", "rtl", "sim")
ALLOWED = {"capsacc": set(), "rtl": {"capsacc"}, "sim": {"rtl", "capsacc"}, "nas": {"capsacc"}}


def imported_packages(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_one_way(package):
    sources = sorted((ROOT / package).rglob("*.py"))
    assert sources, f"{package} has no sources"
    for source in sources:
        wrong = imported_packages(source) - ALLOWED[package] - {package}
        assert not wrong, f"{source.relative_to(ROOT)} imports {sorted(wrong)}"
