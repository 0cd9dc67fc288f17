"""A packaged install works like the editable one: a wheel built from this checkout, installed
into a fresh virtual environment, runs `trialwatch --help` and `trialwatch db upgrade` from an
empty folder (the wheel carries its migrations as trialwatch.migrations)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def _run(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Built from a copy, so the checkout gets no build/ folder; without build isolation, so no
    # download (the test extra brings a recent setuptools).
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("trialwatch", "migrations"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    res = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
               "-w", out, src, cwd=src)
    assert res.returncode == 0, res.stderr
    (whl,) = out.glob("trialwatch-*.whl")
    return whl


def test_the_wheel_carries_the_migrations(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "trialwatch/migrations/env.py" in names
    assert "trialwatch/migrations/script.py.mako" in names
    shipped = {Path(n).name for n in names if n.startswith("trialwatch/migrations/versions/")}
    assert shipped == {p.name for p in (ROOT / "migrations" / "versions").glob("*.py")}
    assert any(n.startswith("trialwatch/templates/") for n in names)


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed; its dependencies come from this environment's
    site-packages (a .pth line), so nothing is downloaded and no editable trialwatch is seen."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=False)
    new_python = env_dir / "bin" / "python"
    site = Path(_run(new_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                     cwd=env_dir).stdout.strip())
    # A plain path line: the deps are importable, but this environment's .pth files (the
    # editable install's finder among them) are not run.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    res = _run(sys.executable, "-m", "pip", "--python", new_python, "install", "--no-deps", "-q", wheel,
               cwd=env_dir)
    assert res.returncode == 0, res.stderr
    return env_dir


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIALWATCH_") and k != "PYTHONPATH"}
    return env


def test_the_installed_package_is_the_wheel_not_the_checkout(installed, tmp_path):
    res = _run(installed / "bin" / "python", "-c", "import trialwatch, trialwatch.migrations as m; "
               "print(trialwatch.__file__); print(m.__file__)", cwd=tmp_path, env=_clean_env())
    assert res.returncode == 0, res.stderr
    for line in res.stdout.split():
        assert Path(line).is_relative_to(installed), line


def test_help_and_db_upgrade_work_from_an_empty_folder(installed, tmp_path):
    exe = installed / "bin" / "trialwatch"
    res = _run(exe, "--help", cwd=tmp_path, env=_clean_env())
    assert res.returncode == 0, res.stderr
    assert "Exit codes" in res.stdout

    res = _run(exe, "db", "upgrade", cwd=tmp_path, env=_clean_env())
    assert res.returncode == 0, res.stderr
    assert "migrated (empty) -> " in res.stdout
    assert (tmp_path / "trialwatch.db").is_file()

    res = _run(exe, "db", "status", cwd=tmp_path, env=_clean_env())
    assert res.returncode == 0, res.stderr
    assert "migration: " in res.stdout
