"""The study browser without a browser: filters by value, buttons by click, against the real stack
(EHR tokens, broker ImagingStudy search, WADO-RS through the broker from our PACS)."""

from __future__ import annotations

import io
from datetime import date
from typing import Any

import pytest
from PIL import Image
from pydicom import Dataset

from s4s_jupyter.widgets import StudyBrowser
from servers.demo_data.plan import DemoPlan

pytestmark = pytest.mark.timeout(90)


def planned(plan: DemoPlan, patient_id: str) -> Any:
    return plan.patient(patient_id)


def test_search_lists_the_patients_studies_and_filters(signed_in: Any, widget_plan: DemoPlan) -> None:
    patient = planned(widget_plan, signed_in.patient)
    browser = StudyBrowser(signed_in)
    browser.search_button.click()
    assert browser.message.value == ""
    assert browser.studies is not None and len(browser.studies) == len(patient.studies)
    assert set(browser.studies["study_uid"]) == {s.study_uid for s in patient.studies}
    assert f"data-count='{len(patient.studies)}'" in browser.table.value
    assert len(browser.study_select.options) == len(patient.studies)

    modality = patient.studies[0].modality
    browser.modality.value = modality
    browser.search_button.click()
    expected = {s.study_uid for s in patient.studies if s.modality == modality}
    assert set(browser.studies["study_uid"]) == expected

    browser.modality.value = ""
    word = patient.studies[0].description.split()[0].upper()
    browser.description.value = word
    browser.search_button.click()
    expected = {s.study_uid for s in patient.studies if word.lower() in s.description.lower()}
    assert expected
    assert set(browser.studies["study_uid"]) == expected

    browser.description.value = ""
    browser.since.value = date(2100, 1, 1)
    browser.search_button.click()
    assert len(browser.studies) == 0 and "data-count='0'" in browser.table.value

    browser.until.value = date(2000, 1, 1)
    browser.search_button.click()
    assert "date range is empty" in browser.message.value


def test_select_a_series_pull_it_and_get_pydicom_datasets(signed_in: Any, widget_plan: DemoPlan) -> None:
    browser = StudyBrowser(signed_in)
    browser.search_button.click()
    study_uid = browser.study_select.options[0][1]
    browser.study_select.value = (study_uid,)
    assert browser.series is not None and len(browser.series_select.options) == len(browser.series)
    assert len(browser.selection) == len(browser.series)  # a study selected: all its series
    series_uid = browser.series_select.options[-1][1]
    browser.series_select.value = (series_uid,)
    assert list(browser.selection["series_uid"]) == [series_uid]

    browser.pull_button.click()
    assert browser.pending is not None
    datasets = browser.pending.result(timeout=60)
    expected = int(browser.selection["number_of_instances"].iloc[0])
    assert len(datasets) == expected and browser.datasets == datasets
    assert all(isinstance(ds, Dataset) for ds in datasets)
    assert {ds.SeriesInstanceUID for ds in datasets} == {series_uid}
    assert {ds.StudyInstanceUID for ds in datasets} == {study_uid}
    assert datasets[0].pixel_array.shape[0] > 0
    assert browser.progress.value == expected and "s4s-done" in browser.progress_label.value
    assert browser.message.value == ""


def test_pull_whole_studies_and_show_rendered_thumbnails(signed_in: Any) -> None:
    browser = StudyBrowser(signed_in, thumbnail_size=32)
    browser.search_button.click()
    uids = tuple(uid for _, uid in browser.study_select.options[:2])
    browser.study_select.value = uids
    browser.thumbnails_button.click()
    assert browser.message.value == ""
    assert len(browser.thumbnail_box.children) == len(browser.selection)
    png = browser.thumbnail_box.children[0].children[0].value
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and max(image.size) <= 32
    browser.pull_button.click()
    assert browser.pending is not None
    datasets = browser.pending.result(timeout=60)
    assert {ds.StudyInstanceUID for ds in datasets} == set(uids)
    assert len(datasets) == int(browser.selection["number_of_instances"].sum())


def test_errors_appear_in_the_widget(signed_in: Any) -> None:
    browser = StudyBrowser(signed_in)
    browser.pull_button.click()
    assert "select one or more" in browser.message.value and browser.pending is None
    browser.thumbnails_button.click()
    assert "select one or more" in browser.message.value
    signed_in.logout()  # tokens revoked at the EHR and forgotten
    browser.search_button.click()
    assert "s4s-error" in browser.message.value and "search failed" in browser.message.value
