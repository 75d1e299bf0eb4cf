"""The study browser: find the patient's imaging studies, pick studies or series, pull them.

Filters (date range, modality, description) go to :meth:`Session.imaging_studies` (FHIR ImagingStudy
search at the imaging server; the description is matched here, case-insensitively, since FHIR R4
ImagingStudy has no search parameter for it). The results table is the kit's DataFrame; the selection
comes back to Python as DataFrames (:attr:`StudyBrowser.selection`) and, after a pull (WADO-RS through
each study's Endpoint), as pydicom Datasets (:attr:`StudyBrowser.datasets`). Thumbnails are the
server's rendered images (WADO-RS ``/rendered``, PS3.18 8.3.5.1.3). Errors are shown in the widget.
"""

from __future__ import annotations

import concurrent.futures
import io
from datetime import date
from html import escape
from typing import TYPE_CHECKING, Any

import ipywidgets as w

from s4s_jupyter.widgets.common import error_html, error_message, run_in_background

if TYPE_CHECKING:
    import pandas as pd
    from pydicom import Dataset

    from s4s_jupyter.client.retrieve import RetrievalProgress
    from s4s_jupyter.client.session import Session

MODALITIES = ["CT", "MR", "CR", "DX", "US", "MG", "PT", "NM", "XA", "RF", "SM"]
TABLE_COLUMNS = ["started", "modalities", "description", "number_of_series", "number_of_instances",
                 "accession", "study_uid"]


class StudyBrowser(w.VBox):
    """Search, select and pull the signed-in patient's imaging studies."""

    def __init__(self, session: Session, *, thumbnail_size: int = 96, first_only: bool = False) -> None:
        self.session = session
        self.thumbnail_size = thumbnail_size
        self.first_only = first_only
        self.since = w.DatePicker(description="From")
        self.until = w.DatePicker(description="To")
        self.modality = w.Dropdown(description="Modality", value="",
                                   options=[("any", ""), *((m, m) for m in MODALITIES)])
        self.description = w.Text(description="Description", placeholder="contains ...")
        self.search_button = w.Button(description="Search", button_style="primary", icon="search")
        self.table = w.HTML()
        self.study_select = w.SelectMultiple(description="Studies", rows=6, options=[],
                                             layout=w.Layout(width="95%"))
        self.series_select = w.SelectMultiple(description="Series", rows=6, options=[],
                                              layout=w.Layout(width="95%"))
        self.study_select.add_class("s4s-studies")
        self.series_select.add_class("s4s-series")
        self.pull_button = w.Button(description="Pull", icon="download",
                                    tooltip="Retrieve the selected series (or whole studies) into memory")
        self.thumbnails_button = w.Button(description="Thumbnails", icon="image")
        self.progress = w.IntProgress(min=0, max=1, value=0, description="Pulled")
        self.progress_label = w.HTML()
        self.thumbnail_box = w.HBox(layout=w.Layout(flex_flow="row wrap"))
        self.message = w.HTML()
        self.studies: pd.DataFrame | None = None
        self.series: pd.DataFrame | None = None
        self.datasets: list[Dataset] = []
        self.pending: concurrent.futures.Future[list[Dataset]] | None = None
        self.search_button.on_click(lambda _: self.search())
        self.pull_button.on_click(lambda _: self.pull())
        self.thumbnails_button.on_click(lambda _: self.show_thumbnails())
        self.study_select.observe(lambda _: self._studies_selected(), names="value")
        super().__init__([
            w.HTML("<b>Imaging studies</b>"),
            w.HBox([self.since, self.until]), w.HBox([self.modality, self.description, self.search_button]),
            self.table, self.study_select, self.series_select,
            w.HBox([self.pull_button, self.thumbnails_button, self.progress, self.progress_label]),
            self.thumbnail_box, self.message,
        ])
        self.add_class("s4s-study-browser")

    def show_error(self, text: str) -> None:
        self.message.value = error_html(text)

    # -- search --------------------------------------------------------------------------------

    def search(self) -> pd.DataFrame | None:
        """Run the search with the filters; fills the table and the study list. Returns the studies."""
        self.message.value = ""
        since, until = self.since.value, self.until.value
        if isinstance(since, date) and isinstance(until, date) and since > until:
            self.show_error("the date range is empty: 'From' is after 'To'")
            return None
        try:
            studies = self.session.imaging_studies(since=since, until=until,
                                                   modality=self.modality.value or None)
        except Exception as exc:
            self.show_error(f"search failed: {error_message(exc)}")
            return None
        text = self.description.value.strip()
        if text:
            studies = studies[studies["description"].fillna("").str.contains(text, case=False, regex=False)]
            studies = studies.reset_index(drop=True)
        self.studies = studies
        self.series = None
        self.study_select.value = ()
        self.study_select.options = [(self._study_label(row), row["study_uid"])
                                     for row in studies.to_dict("records")]
        self.series_select.options = []
        shown = [c for c in TABLE_COLUMNS if c in studies.columns]
        self.table.value = (f"<div class='s4s-results' data-count='{len(studies)}'>{len(studies)} "
                            f"{'study' if len(studies) == 1 else 'studies'}"
                            + (studies[shown].to_html(index=False, classes="s4s-table", border=0,
                                                      na_rep="") if len(studies) else "") + "</div>")
        return studies

    @staticmethod
    def _study_label(row: dict[str, Any]) -> str:
        started: Any = row.get("started")
        day = started.strftime("%Y-%m-%d") if hasattr(started, "strftime") else str(started or "")
        return (f"{day}  {row.get('modalities') or ''}  {row.get('description') or ''}  "
                f"({row.get('number_of_series')} series)")

    def _studies_selected(self) -> None:
        if self.studies is None or not self.study_select.value:
            self.series = None
            self.series_select.options = []
            return
        chosen = self.studies[self.studies["study_uid"].isin(self.study_select.value)]
        try:
            self.series = self.session.series(chosen)
        except Exception as exc:
            self.show_error(f"series: {error_message(exc)}")
            return
        self.series_select.value = ()
        self.series_select.options = [
            (f"#{row['number']} {row['modality'] or ''} {row['description'] or ''} "
             f"({row['number_of_instances']} instances)", row["series_uid"])
            for row in self.series.to_dict("records")]

    # -- selection and pull ------------------------------------------------------------------------

    @property
    def selection(self) -> pd.DataFrame:
        """The selected series (one row each), or every series of the selected studies; empty if none."""
        import pandas as pd

        if self.series is None or self.series.empty:
            return pd.DataFrame()
        if self.series_select.value:
            chosen = self.series["series_uid"].isin(self.series_select.value)
            return self.series[chosen].reset_index(drop=True)
        return self.series.reset_index(drop=True)

    def pull(self) -> concurrent.futures.Future[list[Dataset]] | None:
        """Retrieve the selection in a thread (WADO-RS, in parallel; the progress bar moves per instance).
        The datasets land in :attr:`datasets`; returns the future (also :attr:`pending`)."""
        self.message.value = ""
        selection = self.selection
        if selection.empty:
            self.show_error("select one or more studies or series first")
            return None
        if self.pending is not None and not self.pending.done():
            return self.pending
        total = len(selection) if self.first_only else int(selection["number_of_instances"].fillna(0).sum())
        self.progress.max = max(total, 1)
        self.progress.value = 0
        self.progress_label.value = f"0 / {total} instances"
        done = [0]

        def show(p: RetrievalProgress) -> None:  # after every instance, from the retrieval's threads
            done[0] = p.instances_done
            self.progress.value = min(p.instances_done, self.progress.max)
            self.progress_label.value = (f"<span class='s4s-pulled' data-count='{p.instances_done}'>"
                                         f"{p.instances_done} / {total} instances</span>")

        def pull() -> list[Dataset]:
            pulled = self.session.retrieve(selection, first_only=self.first_only, progress=False,
                                           on_progress=show)
            self.datasets = pulled
            self.progress_label.value = (
                f"<span class='s4s-pulled s4s-done' data-count='{len(pulled)}'>pulled {len(pulled)} "
                f"instances of {len(selection)} series</span>")
            return pulled

        self.pending = run_in_background(
            "s4s-pull", self.pull_button, pull,
            lambda exc: self.show_error(f"pull failed after {done[0]} instances: {error_message(exc)}"))
        return self.pending

    def show_thumbnails(self) -> int:
        """Rendered thumbnails of the first instance of each selected series; returns how many."""
        self.message.value = ""
        selection = self.selection
        if selection.empty:
            self.show_error("select one or more studies or series first")
            return 0
        try:
            frame = self.session.thumbnails(selection, size=self.thumbnail_size)
        except Exception as exc:
            self.show_error(f"thumbnails failed: {error_message(exc)}")
            return 0
        images = []
        for row in frame.to_dict("records"):
            buffer = io.BytesIO()
            row["image"].save(buffer, format="PNG")
            images.append(w.VBox([w.Image(value=buffer.getvalue(), format="png"),
                                  w.HTML(f"<small>{escape(str(row['series_uid'])[-12:])}</small>")]))
        self.thumbnail_box.children = images
        return len(images)
