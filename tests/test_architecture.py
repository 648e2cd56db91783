"""The shape of the code stays as designed (issue 18): layers enforced by import-linter, SQL only in the
store layer, no private names crossing modules, pages never touching the store, and every environment
variable the code reads documented in the README's table."""
import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STORE_LAYER = {"services/index/store.py", "services/index/repositories.py", "services/index/embedding_cache.py",
               "services/index/storage.py"}
SQL = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|DROP|PRAGMA|BEGIN|COMMIT|ROLLBACK)\b", re.I)


def _sources(*folders):
    for folder in folders:
        yield from sorted((ROOT / folder).rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_import_layers_hold():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if exe is None:
        pytest.fail("import-linter is not installed (it is in the dev extras)")
    out = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:]


def test_sql_is_issued_only_by_the_store_layer():
    offenders = []
    for path in _sources("services", "components"):
        if _rel(path) in STORE_LAYER:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr in ("execute", "executemany", "executescript"):
                offenders.append(f"{_rel(path)}:{node.lineno}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.match(node.value) \
                    and " " in node.value.strip() and node.value.strip().split()[1].isupper():
                offenders.append(f"{_rel(path)}:{node.lineno} {node.value[:40]!r}")
    assert offenders == []


def test_no_private_names_cross_modules():
    """`from services.x import _name` or `module._name` on another services module (a private name used
    where it was not defined) — the issue found five; each is now public or gone."""
    offenders = []
    for path in _sources("services", "components"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        modules = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("services"):
                offenders += [f"{_rel(path)}:{node.lineno} {a.name}" for a in node.names if a.name.startswith("_")
                              and not a.name.startswith("__")]
                modules |= {a.asname or a.name for a in node.names}
            elif isinstance(node, ast.Import):
                modules |= {a.asname or a.name for a in node.names if a.name.startswith("services")}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__") \
                    and isinstance(node.value, ast.Name) and node.value.id in modules | {"lib", "library", "store"}:
                offenders.append(f"{_rel(path)}:{node.lineno} {node.value.id}.{node.attr}")
    assert offenders == []


def test_pages_never_touch_the_store():
    hits = [f"{_rel(p)}:{n}" for p in _sources("components") for n, line in
            enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if re.search(r"\.store\b", line)]
    assert hits == []


ENV_READ = re.compile(r"""(?:environ(?:\.get|\.setdefault|\.pop)?\(|environ\[|getenv\()\s*["']([A-Z][A-Z0-9_]+)["']""")
NOT_OURS = {"XDG_CACHE_HOME", "OMP_WAIT_POLICY", "HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT",
            "WENDAO_SERVE_ADDRESS"}  # set by libraries' conventions or by `wendao serve` for its own child


def test_every_environment_variable_the_code_reads_is_in_the_readme_table():
    read = set()
    for path in [*_sources("services", "components"), ROOT / "app.py"]:
        read |= set(ENV_READ.findall(path.read_text(encoding="utf-8")))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", "\n".join(l for l in readme.splitlines() if l.startswith("|"))))
    missing = sorted(read - NOT_OURS - table)
    assert missing == [], f"environment variables read in code but missing from the README table: {missing}"
