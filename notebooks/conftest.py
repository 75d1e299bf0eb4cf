"""Run the tutorials under nbval against a demo stack started here, as CI does.

pyproject's pytest ``addopts`` carry ``--nbval-lax --nbval-current-env``: nbval collects every notebook of
this folder (cells tagged ``nbval-check-output`` must reproduce their committed outputs; every other
cell must run without error), and each notebook's kernel runs on this interpreter (the project's venv).

Before the first cell of a notebook runs (so before nbval starts its kernel), this conftest starts the
whole demo stack in this process: the default demo data set (the one ``make demo`` serves, so the
committed outputs match) in a temporary folder, with the EHR's demo-only ``auto_approve`` setting, so
logins complete without pages through the EHR's authorize endpoint. It writes the URLs file there and
sets ``S4S_URLS_FILE``, which the kernels inherit. The stack stops and the folder goes at the end of the
session; the terminal summary says how the notebooks' logins went.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

URLS_ENV = "S4S_URLS_FILE"
EHR_LOGGER = "s4s.ehr.oauth"  # logs one WARNING per auto-approved authorization
HERE = Path(__file__).resolve().parent


class LoginCounter(logging.Handler):
    """Counts the authorizations the EHR granted through auto-approve (its WARNING record; only counted)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.auto_approved = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("auto-approve: granting"):
            self.auto_approved += 1


class NotebookStack:
    """The demo stack the notebooks run against (started on first use)."""

    def __init__(self) -> None:
        self.loop: Any = None
        self.folder: Path | None = None
        self.urls_file: Path | None = None
        self.previous_env: str | None = None
        self.counter = LoginCounter()
        self.logger = logging.getLogger(EHR_LOGGER)

    def start(self) -> Path:
        if self.urls_file is not None:
            return self.urls_file
        from servers.demo import DemoContext, start_stack
        from servers.demo_data.plan import DemoOptions, make_plan
        from servers.runtime import ServerLoop

        self.folder = Path(tempfile.mkdtemp(prefix="s4s-notebooks-"))
        self.logger.addHandler(self.counter)
        self.loop = ServerLoop().start()
        context = DemoContext(data_dir=self.folder / "data", plan=make_plan(DemoOptions()), auto_approve=True)
        context.data_dir.mkdir()
        urls = start_stack(context, self.loop)
        urls_file = self.folder / "urls.json"
        urls_file.write_text(json.dumps(urls, indent=2))
        self.previous_env = os.environ.get(URLS_ENV)
        os.environ[URLS_ENV] = str(urls_file)
        self.urls_file = urls_file
        return urls_file

    def stop(self) -> None:
        if self.urls_file is None:
            return
        if self.previous_env is None:
            os.environ.pop(URLS_ENV, None)
        else:
            os.environ[URLS_ENV] = self.previous_env
        self.loop.stop()
        self.logger.removeHandler(self.counter)
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.urls_file = None


_stack = NotebookStack()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Start the stack before nbval's notebook collector starts its kernel (the first cell's setup)."""
    if item.path.suffix == ".ipynb" and HERE in item.path.parents:
        _stack.start()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _stack.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _stack.counter.auto_approved:
        terminalreporter.write_line(f"notebooks: the demo EHR auto-approved {_stack.counter.auto_approved} "
                                    "logins (no sign-in pages)")
