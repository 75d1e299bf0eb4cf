"""``s4s-servers pacs`` and the demo seeding, in process."""

from __future__ import annotations

import argparse
from pathlib import Path

import httpx
import pytest

from servers.demo_data.dicom import plan_size
from servers.demo_data.plan import DemoPlan
from servers.pacs import command
from servers.pacs.seed import seed
from servers.pacs.store import Store
from servers.runtime import ServerLoop


def test_run_serves_the_pacs_and_returns_its_dicomweb_url(server_loop: ServerLoop, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(["--data-dir", str(tmp_path / "pacs"), "--max-upload-bytes", "1000"])
    urls = command.run(args, server_loop)
    assert set(urls) == {"pacs_dicomweb"}
    url = urls["pacs_dicomweb"]
    assert url.startswith("http://127.0.0.1:") and url.endswith("/dicom-web")
    assert httpx.get(url + "/studies").status_code == 204
    big = httpx.post(url + "/studies", content=b"x" * 2000,
                     headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'})
    assert big.status_code == 413


def test_seeding_loads_the_plan_once(tmp_path: Path, small_plan: DemoPlan) -> None:
    store = Store(tmp_path / "pacs", fsync=False)
    assert seed(store, small_plan) == plan_size(small_plan)
    assert seed(store, small_plan) == 0
    assert store.count_instances() == plan_size(small_plan)
    store.close()


def test_unsent_limit_option(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    default = command._settings(parser.parse_args(["--data-dir", str(tmp_path)]))
    assert default.unsent_limit_bytes == 16 * 1024
    off = command._settings(parser.parse_args(["--data-dir", str(tmp_path), "--unsent-limit", "0"]))
    assert off.unsent_limit_bytes is None  # the kernel's default: no limit
    other = command._settings(parser.parse_args(["--data-dir", str(tmp_path), "--unsent-limit", "65536"]))
    assert other.unsent_limit_bytes == 65536
    with pytest.raises(SystemExit) as refused:
        parser.parse_args(["--unsent-limit", "-1"])
    assert refused.value.code == 2  # argparse's usage error
