"""End to end in a real browser: the demo stack, a real JupyterLab server (``servers.lab.start_lab``, the
launcher behind ``make demo``) and headless Chromium (Debian's, driven by Playwright).

JupyterLab opens a notebook; its login widget's button leads through the EHR's real pages (login,
patient picker, consent) back to the server extension's callback; the widget shows the patient; the
study browser lists the studies and pulls one; a cell prints what the kernel holds: pydicom datasets of
that study.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from servers.demo_data.plan import DemoOptions, DemoPlan, make_plan
from servers.runtime import ServerLoop

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

CELLS = [
    "import os\nimport s4s_jupyter as s4s\nfrom s4s_jupyter.widgets import LoginWidget, StudyBrowser\n"
    "ehr = s4s.connect(os.environ['S4S_EHR_URL'], login=False)\n"
    "login = LoginWidget(ehr, poll_interval=0.25)\nlogin",
    "browser = StudyBrowser(ehr)\nbrowser",
    "import json, pydicom\nprint('KERNEL ' + json.dumps({'n': len(browser.datasets), "
    "'pydicom': all(isinstance(d, pydicom.Dataset) for d in browser.datasets), "
    "'studies': sorted({d.StudyInstanceUID for d in browser.datasets}), "
    "'patients': sorted({str(d.PatientID) for d in browser.datasets})}))",
]


def notebook(cells: list[str]) -> dict[str, Any]:
    return {"nbformat": 4, "nbformat_minor": 5,
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
            "cells": [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "execution_count": None,
                       "outputs": [], "source": src} for i, src in enumerate(cells)]}


@pytest.fixture(scope="module")
def e2e_plan() -> DemoPlan:
    return make_plan(DemoOptions(patients=2, studies_per_patient=(2, 2), series_per_study=(1, 2),
                                 instances_per_series=(2, 3), rows=32, columns=32))


@pytest.fixture(scope="module")
def lab_stack(server_loop: ServerLoop, tmp_path_factory: pytest.TempPathFactory,
              e2e_plan: DemoPlan) -> Iterator[tuple[dict[str, Any], Any, Path]]:
    from servers.demo import DemoContext, start_stack
    from servers.lab import start_lab

    tmp = tmp_path_factory.mktemp("lab-e2e")
    urls = start_stack(DemoContext(data_dir=tmp / "stack", plan=e2e_plan), server_loop)
    root = tmp / "root"
    root.mkdir()
    (root / "e2e.ipynb").write_text(json.dumps(notebook(CELLS)))
    env = {name: str(tmp / name.lower()) for name in (
        "JUPYTER_DATA_DIR", "JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTERLAB_SETTINGS_DIR",
        "JUPYTERLAB_WORKSPACES_DIR", "IPYTHONDIR")}
    log = (tmp / "lab.log").open("wb")
    lab = start_lab(urls, config_dir=tmp / "config", root_dir=root, env=env, stdout=log)
    try:
        yield urls, lab, tmp
    finally:
        lab.stop()
        log.close()


def run_cell(page: Any, index: int) -> None:
    """Select cell ``index`` and run it (Shift+Enter in its editor); wait until the kernel took it (its
    prompt shows ``[*]`` or a number). A run sent before the kernel's connection is up is lost, so retry."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    prompt = cell.locator(".jp-InputPrompt")
    for _ in range(3):
        cell.locator(".jp-InputArea-editor").click()
        page.keyboard.press("Shift+Enter")
        try:
            page.wait_for_function("(e) => /\\[(\\*|\\d+)\\]/.test(e.textContent)",
                                   arg=prompt.element_handle(), timeout=10_000)
            return
        except PlaywrightTimeout:
            continue
    raise AssertionError(f"cell {index} did not run")


@pytest.mark.browser
@pytest.mark.timeout(150)
def test_lab_login_widget_ehr_pages_callback_study_browser_pull(
        lab_stack: tuple[dict[str, Any], Any, Path], e2e_plan: DemoPlan) -> None:
    from playwright.sync_api import sync_playwright

    _urls, lab, tmp = lab_stack
    user = next(u for u in e2e_plan.users if len(u.patient_ids) == 1)
    patient = e2e_plan.patient(user.patient_ids[0])
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = chromium.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        try:
            page.set_default_timeout(60_000)
            page.goto(f"{lab.url}lab/tree/e2e.ipynb?token={lab.token}")
            page.wait_for_selector(".jp-Notebook .jp-Cell .jp-InputArea-editor")
            page.get_by_text(re.compile(r"\| Idle")).wait_for()  # the kernel is up

            run_cell(page, 0)
            link = page.wait_for_selector("a.s4s-login-link")
            assert link is not None
            page.wait_for_selector(".s4s-status[data-logged-in='false']")
            with context.expect_page() as popup_info:
                link.click()
            ehr = popup_info.value
            ehr.set_default_timeout(30_000)
            ehr.wait_for_selector("input[name=username]")
            ehr.fill("input[name=username]", user.username)
            ehr.fill("input[name=password]", user.password)
            ehr.click("button[type=submit]")
            if ehr.locator("input[name=patient]").count():  # the picker (skipped by EHRs for one patient)
                ehr.check(f"input[name=patient][value='{patient.id}']")
                ehr.click("button[type=submit]")
            ehr.click("button[name=approve]")
            ehr.wait_for_selector("[data-s4s-login='ok']")
            assert patient.id in ehr.inner_text("body")
            ehr.close()

            page.bring_to_front()
            page.wait_for_selector(f".s4s-patient[data-patient='{patient.id}']")

            run_cell(page, 1)
            browser = page.wait_for_selector(".s4s-study-browser")
            assert browser is not None
            page.click(".s4s-study-browser button:has-text('Search')")
            page.wait_for_selector(f".s4s-results[data-count='{len(patient.studies)}']")
            page.locator(".s4s-studies select").select_option(index=0)
            page.wait_for_selector(".s4s-series select option")  # the study's series are listed
            page.click(".s4s-study-browser button:has-text('Pull')")
            done = page.wait_for_selector(".s4s-pulled.s4s-done")
            assert done is not None
            pulled = int(done.get_attribute("data-count") or 0)

            run_cell(page, 2)
            out = page.wait_for_selector(".jp-OutputArea-output pre:has-text('KERNEL ')")
            assert out is not None
            found = re.search(r"KERNEL (\{.*\})", out.inner_text())
            assert found, out.inner_text()
            held = json.loads(found.group(1))
        except Exception:
            page.screenshot(path=str(tmp / "failure.png"), full_page=True)
            raise
        finally:
            context.close()
            chromium.close()
    assert held["pydicom"] is True and held["n"] == pulled > 0
    assert held["patients"] == [patient.mrn]
    assert len(held["studies"]) == 1
    study = next(s for s in patient.studies if s.study_uid == held["studies"][0])
    assert held["n"] == study.number_of_instances
