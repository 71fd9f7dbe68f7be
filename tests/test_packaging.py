"""What `pip install keras-actlog` promises: a cheap import, one version, the command and the plugin."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import actlog

ROOT = Path(__file__).resolve().parent.parent


def test_import_does_not_pay_for_tensorflow():
    code = (
        "import sys, actlog; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


DISTRIBUTION = re.search(r'^name = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)


def test_one_version_string():
    # A set: an editable install may list the package under its name more than once.
    (distribution,) = set(importlib.metadata.packages_distributions()["actlog"])
    assert importlib.metadata.version(distribution) == actlog.__version__
    assert '__version__ = "' not in (ROOT / "pyproject.toml").read_text()


def test_public_names():
    assert set(actlog.__all__) <= set(dir(actlog))
    for name in actlog.__all__:
        assert getattr(actlog, name) is not None
    assert issubclass(actlog.LogError, ValueError)
    assert issubclass(actlog.LoggingError, RuntimeError)


def test_console_script_and_tensorboard_plugin_are_registered():
    entry_points = importlib.metadata.entry_points()
    (script,) = [e for e in entry_points.select(group="console_scripts") if e.name == "actlog"]
    assert script.value == "actlog.cli:main"
    (plugin,) = [e for e in entry_points.select(group="tensorboard_plugins") if e.name == "actlog"]
    from actlog.plugin.plugin import ActivationsLoader

    assert plugin.load() is ActivationsLoader


def test_every_install_line_names_the_distribution():
    """PyPI's `actlog` is an unrelated project: no install line may fetch it."""
    assert DISTRIBUTION == "keras-actlog"
    texts = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "actlog").rglob("*.py"),
             *(ROOT / "examples").glob("*.py")]
    wrong = re.compile(r"(?<![\w./-])actlog\[|pip install (--\S+ )*'?actlog\b")
    found = [f"{path.relative_to(ROOT)}: {line.strip()}" for path in texts
             for line in path.read_text().splitlines() if wrong.search(line)]
    assert found == []
    readme = (ROOT / "README.md").read_text()
    for extra in ("jax", "torch", "tensorflow"):
        assert f"pip install '{DISTRIBUTION}[{extra}]'" in readme


def test_a_backend_keras_cannot_import_names_the_variable_to_set():
    """Keras picks TensorFlow when KERAS_BACKEND is unset and then says only "No module named
    'tensorflow'": actlog and the example say which KERAS_BACKEND to set instead."""
    import importlib.util
    import os

    from actlog.backends import SUPPORTED

    missing = [name for name in SUPPORTED if importlib.util.find_spec(name) is None]
    installed = [name for name in SUPPORTED if name not in missing]
    if not missing or not installed:
        pytest.skip(f"needs a backend that is not installed here and one that is; installed: {installed}")
    env = {**os.environ, "KERAS_BACKEND": missing[0], "PYTHONPATH": str(ROOT)}
    expected = (
        f"Keras could not import its backend: KERAS_BACKEND={missing[0]} is {missing[0]!r}, which is not "
        f"installed here (ModuleNotFoundError: No module named {missing[0]!r}). To run on another backend, "
        f"set KERAS_BACKEND to a backend installed here ({' or '.join(installed)}) before Python starts: "
        f"export KERAS_BACKEND={installed[0]}. To run on {missing[0]}: "
        f"pip install 'keras-actlog[{missing[0]}]'."
    )
    logger = subprocess.run([sys.executable, "-c", "import actlog; actlog.ActivationLogger"], env=env,
                            capture_output=True, text=True)
    assert logger.returncode == 1 and logger.stderr.splitlines()[-1] == f"ModuleNotFoundError: {expected}"
    example = subprocess.run([sys.executable, str(ROOT / "examples" / "mnist_convnet.py")], env=env,
                             capture_output=True, text=True)
    assert (example.returncode, example.stdout, example.stderr) == (1, "", f"mnist_convnet.py: {expected}\n")


@pytest.mark.slow
def test_a_wheel_built_from_a_clean_checkout_ships_the_package_data(tmp_path):
    """What `git archive HEAD` holds is what a release builds from: no stray local file helps."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    source = tmp_path / "source"
    source.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path / "dist"),
         str(source)],
        check=True, capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("keras_actlog-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    static = {p.name for p in (ROOT / "actlog" / "plugin" / "static").iterdir()}
    assert {f"actlog/plugin/static/{name}" for name in static} <= names
    assert "actlog/py.typed" in names and "actlog/backends/jax.py" in names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "docs/"))]
    assert wheel.name.startswith(f"keras_actlog-{actlog.__version__}-")
