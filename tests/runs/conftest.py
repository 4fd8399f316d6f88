"""Each runs test gets its own empty DCOPT_HOME (the session one is shared by every CLI test)."""

from __future__ import annotations

import pytest


@pytest.fixture
def home(tmp_path, monkeypatch):
    path = tmp_path / "home"
    monkeypatch.setenv("DCOPT_HOME", str(path))
    monkeypatch.delenv("DCOPT_NO_RECORD", raising=False)
    return path


def fake_run(kind="bench", options=None, metrics=None, model=None, home=None, label=None, outputs=None):
    """Record a run through the real API (no command behind it)."""
    from dcopt.runs.record import record_run

    with record_run(kind, ["dcopt", kind], options or {}, model=model, home=home, capture_output=False,
                    label=label or "") as run:
        run.log_metrics(metrics or {})
        for name, text in (outputs or {}).items():
            run.log_output(name, text)
    return run.id
