"""What `pip install actlog` promises: a cheap import, one version, the command and the plugin."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import actlog

ROOT = Path(__file__).resolve().parent.parent


def test_import_does_not_pay_for_tensorflow():
    code = (
        "import sys, actlog; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_one_version_string():
    assert importlib.metadata.version("actlog") == actlog.__version__
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


def test_package_data_is_shipped():
    package = Path(actlog.__file__).parent
    assert (package / "py.typed").is_file()
    assert (package / "plugin" / "static" / "index.js").is_file()
