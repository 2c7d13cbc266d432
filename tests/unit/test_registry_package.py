"""What the Comfy Registry publishes: git-tracked files minus .comfyignore, with a licence that matches
pyproject and no code that `comfy node validate` warns about (ruff S102 exec, S307 eval, E702 `;`)."""

import ast
import fnmatch
import io
import subprocess
import tokenize
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def tracked_files():
    listing = subprocess.run(["git", "-C", str(REPO_ROOT), "ls-files"], capture_output=True, text=True)
    if listing.returncode != 0:
        pytest.skip("not a git checkout: the registry archive is made from git-tracked files")
    return [line for line in listing.stdout.splitlines() if (REPO_ROOT / line).exists()]


def ignore_patterns():
    lines = (REPO_ROOT / ".comfyignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def ignored(path, patterns):
    """gitwildmatch for the pattern kinds .comfyignore uses: `dir/` (a folder anywhere) and plain names."""
    parts = path.split("/")
    for pattern in patterns:
        if pattern.endswith("/"):
            name = pattern.rstrip("/").lstrip("/")
            if pattern.startswith("/") or "/" in name:
                if path.startswith(name + "/"):
                    return True
            elif name in parts[:-1]:
                return True
        elif any(fnmatch.fnmatch(part, pattern) for part in parts) or fnmatch.fnmatch(path, pattern.lstrip("/")):
            return True
    return False


def test_published_archive_leaves_out_tests_bench_deploy_and_ci():
    patterns = ignore_patterns()
    published = [path for path in tracked_files() if not ignored(path, patterns)]
    leaked = [path for path in published if path.split("/")[0] in {"tests", "bench", "deploy", ".ci"}]
    assert leaked == [], f"the registry archive would carry {leaked[:5]}"
    for needed in ("__init__.py", "LICENSE", "pyproject.toml", "requirements.txt", "README.md",
                   "nodes/__init__.py", "wanfit/__init__.py", "js/wanfit.js"):
        assert needed in published, f"{needed} is missing from the registry archive"
    assert any(path.startswith("workflows/") for path in published)
    assert any(path.startswith("example_workflows/") for path in published)


def test_licence_file_matches_pyproject():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == {"text": "Apache-2.0"}
    licence = (REPO_ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence


def test_registry_icon_is_a_file_or_absent():
    comfy = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["comfy"]
    icon = comfy.get("Icon")
    assert icon is None or (icon and (icon.startswith("https://") or (REPO_ROOT / icon).is_file())), \
        f"[tool.comfy] Icon = {icon!r}: give an image or leave the key out"


def python_files():
    return [REPO_ROOT / path for path in tracked_files() if path.endswith(".py")]


def test_no_exec_eval_or_semicolon_statements_anywhere():
    """`comfy node validate` runs ruff S102/S307/E702 over the whole tree and says these become errors."""
    problems = []
    for path in python_files():
        source = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("exec", "eval"):
                problems.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} {node.func.id}()")
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.OP and token.string == ";":
                problems.append(f"{path.relative_to(REPO_ROOT)}:{token.start[0]} ';' between statements")
    assert problems == []
