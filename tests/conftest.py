"""Test configuration: offline, tiny, CPU.

Environment for the heavy libraries is set here, before any of them is imported: the Hugging Face hub
and ultralytics are offline, ultralytics never pip-installs and finds a font locally, and lapgen's home
(registry, caches) is a per-session temporary folder so tests never touch the user's files.

Shared fixtures live in `tests/fixtures/*.py`; every module there is loaded as a pytest plugin.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="lapgen-test-home-"))
os.environ["LAPGEN_HOME"] = str(_SESSION_HOME / "lapgen")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HOME"] = str(_SESSION_HOME / "hf")
os.environ["YOLO_OFFLINE"] = "1"
os.environ["YOLO_AUTOINSTALL"] = "0"
os.environ["YOLO_VERBOSE"] = "0"
os.environ["YOLO_CONFIG_DIR"] = str(_SESSION_HOME / "yolo")
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}" for p in (Path(__file__).parent / "fixtures").glob("*.py") if p.stem != "__init__"
)

_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0", None, ""}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any name lookup of a non-local host fails loudly: a test that tries to download is a bug."""
    real = socket.getaddrinfo

    def guarded(host, *args, **kwargs):
        if host in _LOCAL_HOSTS or (isinstance(host, str) and host.startswith("127.")):
            return real(host, *args, **kwargs)
        raise OSError(f"network access attempted in a test: {host}")

    monkeypatch.setattr(socket, "getaddrinfo", guarded)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SESSION_HOME, ignore_errors=True)
