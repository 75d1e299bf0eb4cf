"""Print what Orthanc and our PACS answer to every malformed case, as the Markdown table of
docs/conformance.md: ``.venv/bin/python -m tests.conformance.report``.

Both servers start empty, in temporary folders; read-only cases run after the conformance set is loaded.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import httpx
from dicomweb_client.api import DICOMwebClient

from servers.runtime import ServerLoop
from tests.conformance.conftest import start_pacs
from tests.conformance.dataset import build_instances
from tests.conformance.malformed import QIDO_CASES, STOW_CASES, WADO_CASES, Malformed
from tests.support.orthanc import OrthancServer


def _answer(r: httpx.Response) -> str:
    ctype = r.headers.get("content-type", "").split(";")[0] or "no type"
    return f"{r.status_code} ({ctype})"


def _stored(base: str) -> int:
    r = httpx.get(f"{base}/instances", timeout=30)
    return len(r.json()) if r.status_code == 200 else 0


def main() -> None:
    instances = build_instances()
    loop = ServerLoop().start()
    try:
        with tempfile.TemporaryDirectory() as tmp, OrthancServer() as orthanc:
            ours = start_pacs(loop, Path(tmp) / "pacs")
            bases = {"Orthanc 1.10.1 + DICOMweb 1.7": orthanc.dicomweb_url, "our PACS": ours}
            print("| case | standard | expected | " + " | ".join(bases) + " |")
            print("|---|---|---|" + "---|" * len(bases))

            def row(case: Malformed, stow: bool) -> None:
                cells = []
                for base in bases.values():
                    before = _stored(base) if stow else 0
                    r = case.send(base, instances)
                    cell = _answer(r)
                    if stow and _stored(base) != before:
                        cell += " **stored it**"
                    cells.append(cell)
                expect = " or ".join(map(str, case.expect))
                print(f"| {case.id} | {case.reference} | {expect} | " + " | ".join(cells) + " |")

            for case in STOW_CASES:
                row(case, stow=True)
            orthanc.load(i.data for i in instances)
            DICOMwebClient(ours).store_instances([i.dataset() for i in instances])
            for case in QIDO_CASES + WADO_CASES:
                row(case, stow=False)
    finally:
        loop.stop()


if __name__ == "__main__":
    main()
