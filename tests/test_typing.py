"""The library is typed for its users: the public API's modules and a program using it pass mypy --strict."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PUBLIC = ["orchestr/__init__.py", "orchestr/api.py", "orchestr/errors.py", "orchestr/model.py", "orchestr/planner.py",
          "orchestr/executor.py", "orchestr/runtime.py", "orchestr/spec/__init__.py", "orchestr/spec/models.py"]


def mypy(*files: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), *files],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)


def test_the_public_api_and_a_program_using_it_pass_a_strict_type_check():
    proc = mypy(*PUBLIC, "tests/typed_program.py")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (ROOT / "orchestr" / "py.typed").exists()


def test_the_check_finds_a_type_error(tmp_path):
    wrong = tmp_path / "wrong.py"
    wrong.write_text("import orchestr\n\nservices: list[int] = orchestr.load(['x.yaml'])\n")
    proc = mypy(str(wrong))
    assert proc.returncode == 1 and "Incompatible types in assignment" in proc.stdout, proc.stdout


def test_the_api_page_is_the_one_the_docstrings_make():
    import importlib.util

    spec = importlib.util.spec_from_file_location("api_doc", ROOT / "scripts" / "api_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (ROOT / "docs" / "api.md").read_text() == module.render(), "run python scripts/api_doc.py"
