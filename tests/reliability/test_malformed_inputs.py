"""The malformed-input corpus (`cases.py`) through the real CLI: every case must fail as a user error.

Contract checked per case: exit code 2; exactly one line on stderr, `lapgen: error: ...`, holding the
case's expected strings (the problem, and the file where there is one); no traceback; the case folder
(inputs, the --out path and its siblings) and the registry file byte-for-byte unchanged.
"""

from __future__ import annotations

import pytest

from tests.reliability.cases import CASES, Case
from tests.reliability.harness import (
    cli_env,
    error_line,
    run_in_process,
    run_subprocess,
    snapshot,
    snapshot_diff,
)


def _registry_file():
    from lapgen.registry import registry_path

    return registry_path()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_input_is_a_clean_user_error(case: Case, world, tmp_path, monkeypatch, torch_threads):
    d = tmp_path / "case"
    d.mkdir()
    argv = case.build(world, d)
    monkeypatch.chdir(d)  # anything written relative to the working folder shows up in the snapshot
    registry = _registry_file()
    before = snapshot(d)
    registry_before = registry.read_bytes() if registry.exists() else None

    if case.home:
        registry = d / "home" / "registry.yaml"
        registry_before = registry.read_bytes()
        run = run_subprocess(argv, cwd=d, env=cli_env(LAPGEN_HOME=str(d / "home")))
    else:
        run = run_subprocess(argv, cwd=d) if case.sub else run_in_process(argv)

    line = error_line(run)
    for needle in case.expect:
        assert needle in line, f"{needle!r} not in the error line: {line}"
    diff = snapshot_diff(before, snapshot(d))
    if case.home:  # the registry's lock file is created on first use and kept; it is not an output
        diff = [x for x in diff if not x.endswith("registry.yaml.lock")]
    if case.staging:
        out = d / case.staging
        assert not out.exists(), f"{out} exists after a failed run"
        stage = str(out) + ".partial"
        diff = [x for x in diff if not (x == f"+ {stage}" or x.startswith(f"+ {stage}/"))]
    assert diff == [], f"the failed command changed {d}"
    assert (registry.read_bytes() if registry.exists() else None) == registry_before, "registry changed"
