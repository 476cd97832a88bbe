"""The README's package table describes the package as it is."""
from __future__ import annotations

import re
from pathlib import Path

import cagnet

PACKAGE_DIR = Path(cagnet.__file__).resolve().parent
README = PACKAGE_DIR.parent / "README.md"
#: "No module above ~500 lines unless the README says why": 5 % over counts as about 500.
LONG_MODULE_LINES = 525


def _package_section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## The package")
    return text[start:text.index("\n## ", start + 1)]


def test_every_top_level_module_is_in_the_package_table():
    table_names = set(re.findall(r"^\| `(cagnet\.[\w.]+)` \|", _package_section(), flags=re.M))
    modules = {f"cagnet.{path.stem}" for path in PACKAGE_DIR.glob("*.py") if not path.stem.startswith("__")}
    packages = {f"cagnet.{path.parent.name}" for path in PACKAGE_DIR.glob("*/__init__.py")}
    configs = {"cagnet.configs"} if (PACKAGE_DIR / "configs").is_dir() else set()
    assert modules | packages | configs == table_names


def test_long_modules_are_explained_in_the_readme():
    section = _package_section()
    explained = section[section.index("stay above ~500 lines"):]
    for path in PACKAGE_DIR.rglob("*.py"):
        if len(path.read_text(encoding="utf-8").splitlines()) > LONG_MODULE_LINES:
            name = ".".join(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
            assert f"`{name}`" in explained, f"{name} is longer than {LONG_MODULE_LINES} lines; say why in the README"
