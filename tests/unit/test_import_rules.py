"""Issue 8 §5: the layers import only what they may, read from the source files with ``ast``.

- ``agent/`` takes from the control plane only the pure domain (``chalicelib.domain``) and
  the one shared durable-write helper (``chalicelib.fsutil``): a host needs nothing else.
- ``chalicelib/domain`` does no I/O: it imports only the standard library's pure modules
  and other domain modules; time, ids, randomness and configuration come in as arguments.
- ``app.py`` and ``chalicelib/api`` reach the adapters only through ``chalicelib.wiring``.

An import under ``if TYPE_CHECKING:`` runs nothing and is not counted. A second check
imports the agent and the domain in a fresh interpreter and looks at what got loaded,
so an import that comes in through another module is caught too.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# The standard library the domain may use: computation only, nothing that reads a clock, the
# environment, randomness, files, processes or the network. Add a module here only if that holds.
PURE_STDLIB = frozenset({
    "__future__", "abc", "base64", "binascii", "bisect", "collections", "dataclasses", "enum",
    "functools", "hashlib", "heapq", "hmac", "ipaddress", "itertools", "json", "math", "operator",
    "re", "string", "types", "typing",
})
# Builtins that do I/O (or import behind the rules' back).
IMPURE_BUILTINS = frozenset({"open", "print", "input", "__import__", "exec", "eval", "breakpoint"})
AGENT_MAY_USE = ("chalicelib.domain", "chalicelib.fsutil", "chalicelib.wgkeys")
# What a pure domain must never pull in, directly or through another module.
IO_MODULES = ("boto3", "botocore", "pynamodb", "chalice", "awscrt", "awsiot", "paho", "pyroute2",
              "urllib.request", "http.client", "socket", "subprocess", "random", "secrets", "time")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _run_time_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node that can run: the bodies of ``if TYPE_CHECKING:`` are left out."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imports(path: Path, root: Path) -> Iterator[tuple[int, str]]:
    """``(line, module)`` for each module ``path`` imports at run time, relative imports made absolute.

    ``from package import name`` counts as importing ``package.name`` when ``package`` is one
    of ours (a folder under ``root``): the name may be a submodule.
    """
    me = module_name(path, root)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    for node in _run_time_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            if (root / base.replace(".", "/") / "__init__.py").is_file():
                for alias in node.names:
                    yield node.lineno, f"{base}.{alias.name}"
            else:
                yield node.lineno, base


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _files(root: Path, *where: str) -> list[Path]:
    out: list[Path] = []
    for w in where:
        p = root / w
        out += [p] if p.suffix == ".py" else sorted(p.rglob("*.py"))
    return [f for f in out if f.is_file()]


def agent_violations(root: Path) -> list[str]:
    return sorted(f"{f.relative_to(root)}:{line} imports {m}"
                  for f in _files(root, "agent") for line, m in imports(f, root)
                  if _within(m, "chalicelib") and not any(_within(m, ok) for ok in AGENT_MAY_USE))


def domain_violations(root: Path) -> list[str]:
    found = []
    for f in _files(root, "chalicelib/domain"):
        for line, m in imports(f, root):
            if not (_within(m, "chalicelib.domain") or m.split(".")[0] in PURE_STDLIB):
                found.append(f"{f.relative_to(root)}:{line} imports {m}")
        for node in _run_time_nodes(ast.parse(f.read_text(), str(f))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in IMPURE_BUILTINS):
                found.append(f"{f.relative_to(root)}:{node.lineno} calls {node.func.id}()")
    return sorted(found)


def api_violations(root: Path) -> list[str]:
    return sorted(f"{f.relative_to(root)}:{line} imports {m}"
                  for f in _files(root, "app.py", "chalicelib/api") for line, m in imports(f, root)
                  if _within(m, "chalicelib.adapters"))


def test_the_agent_takes_only_the_domain_and_fsutil_from_the_control_plane():
    assert agent_violations(ROOT) == []


def test_the_domain_imports_no_io_and_nothing_from_outside_the_domain():
    assert domain_violations(ROOT) == []


def test_the_app_and_the_api_reach_no_adapter_directly():
    assert api_violations(ROOT) == []


def _loaded_after_importing(modules: list[str]) -> set[str]:
    """The modules a fresh interpreter holds after importing ``modules``, less what it starts with."""
    code = ("import sys, json; before = set(sys.modules)\n"
            f"for m in {modules!r}: __import__(m)\n"
            "print(json.dumps(sorted(set(sys.modules) - before)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout))


def test_what_the_agent_and_the_domain_load_through_other_modules_keeps_the_rules():
    agent = [module_name(f, ROOT) for f in _files(ROOT, "agent") if f.name != "__main__.py"]
    loaded = _loaded_after_importing(agent)
    assert sorted(m for m in loaded if _within(m, "chalicelib") and m != "chalicelib"
                  and not any(_within(m, ok) for ok in AGENT_MAY_USE)) == []
    loaded = _loaded_after_importing([module_name(f, ROOT) for f in _files(ROOT, "chalicelib/domain")])
    assert sorted(m for m in loaded if _within(m, "chalicelib") and m != "chalicelib"
                  and not _within(m, "chalicelib.domain")) == []
    assert sorted(m for m in loaded if any(_within(m, io) for io in IO_MODULES)) == []


BAD = {
    "agent/runner.py": "from chalicelib.service import Service\nfrom chalicelib import wiring\n",
    "agent/ok.py": "from chalicelib.domain import protocol\nfrom chalicelib.fsutil import write_atomic\n",
    "chalicelib/domain/plan.py": "import time\nfrom ..errors import ConflictError\n"
                                 "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import random\n",
    "chalicelib/domain/ids.py": "import os\nKEY = os.environ['K']\nprint(KEY)\n",
    "chalicelib/api/hosts.py": "from ..adapters.memory import MemoryPublisher\n",
    "app.py": "import chalicelib.adapters.dynamodb.store\nfrom chalicelib.wiring import get_service\n",
}


@pytest.fixture
def bad_tree(tmp_path: Path) -> Path:
    for pkg in ("agent", "chalicelib", "chalicelib/domain", "chalicelib/api", "chalicelib/adapters"):
        (tmp_path / pkg).mkdir(parents=True, exist_ok=True)
        (tmp_path / pkg / "__init__.py").write_text("")
    for rel, text in BAD.items():
        (tmp_path / rel).write_text(text)
    return tmp_path


def test_each_rule_reports_a_deliberately_bad_import(bad_tree: Path):
    assert agent_violations(bad_tree) == ["agent/runner.py:1 imports chalicelib.service",
                                          "agent/runner.py:2 imports chalicelib.wiring"]
    assert domain_violations(bad_tree) == [
        "chalicelib/domain/ids.py:1 imports os", "chalicelib/domain/ids.py:3 calls print()",
        "chalicelib/domain/plan.py:1 imports time", "chalicelib/domain/plan.py:2 imports chalicelib.errors"]
    assert api_violations(bad_tree) == ["app.py:1 imports chalicelib.adapters.dynamodb.store",
                                        "chalicelib/api/hosts.py:1 imports chalicelib.adapters.memory"]
