"""Uploads cut short: the API process killed mid-upload (SIGKILL) and clients that hang up leave no
half-made job in Redis, and the queue stays consistent for every job that was made."""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.cluster import RADAR_64, deployment, kill, submit
from tests.support.queue_probe import QueueProbe

pytestmark = pytest.mark.integration

RADAR = RADAR_64.read_bytes()


def _start_upload(url: str, body: bytes, sent: int) -> socket.socket:
    """Open a raw HTTP/1.1 submit and send its headers and the first `sent` body bytes."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    head = (
        "POST /v1/nowcasts?members=1&steps=2 HTTP/1.1\r\n"
        f"Host: {parts.hostname}:{parts.port}\r\n"
        "Content-Type: application/x-netcdf\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body[:sent])
    return sock


def _assert_every_job_whole(probe: QueueProbe) -> set[str]:
    """Each job record has its input, its active-set entry and exactly one queue entry."""
    ids = probe.job_ids()
    entries = (
        [fields[b"job_id"].decode() for _id, fields in probe.db.xrange(probe.keys.stream)]
        if probe.stream_length()
        else []
    )
    for job_id in ids:
        record = probe.job(job_id)
        assert record["status"] == "accepted", record
        assert probe.has_input(job_id), f"job {job_id} has no input"
        assert entries.count(job_id) == 1, f"job {job_id} has {entries.count(job_id)} entries"
    assert set(entries) == ids and probe.active() == ids
    return ids


@pytest.fixture()
def api_only(tmp_path: Path, redis_url: str, tiny_model_dir: Path):
    with deployment(
        tmp_path, redis_url, model_dir=tiny_model_dir, max_queue_length=1000
    ) as deployed:
        yield deployed


def test_api_killed_mid_upload_leaves_no_job(api_only) -> None:
    fleet, probe = api_only
    victim, url = fleet.spawn_api("api-victim.log")
    half = _start_upload(url, RADAR, len(RADAR) // 2)
    time.sleep(0.5)  # the server holds half a body
    kill(victim)
    victim.wait(timeout=10)
    half.close()
    assert probe.job_ids() == set() and probe.stream_length() == 0 and probe.active() == set()

    # many uploads in flight at the moment of the kill: jobs that exist are whole, those the
    # clients were told about (202) exist
    victim, url = fleet.spawn_api("api-victim-2.log")
    accepted: list[str] = []
    stop = threading.Event()

    def upload_forever() -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            while not stop.is_set():
                try:
                    response = submit(client, RADAR, members=1, steps=2)
                except httpx.HTTPError:
                    return
                if response.status_code == 202:
                    accepted.append(response.json()["id"])

    threads = [threading.Thread(target=upload_forever) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    kill(victim, signal.SIGKILL)
    stop.set()
    for thread in threads:
        thread.join(timeout=15)
    victim.wait(timeout=10)
    made = _assert_every_job_whole(probe)
    assert accepted and set(accepted) <= made


def test_client_hanging_up_mid_upload_leaves_no_job(api_only) -> None:
    fleet, probe = api_only
    fleet.start_api()
    for sent in (0, 1, len(RADAR) // 3, len(RADAR) - 1):
        _start_upload(fleet.url, RADAR, sent).close()
    time.sleep(0.5)
    assert probe.job_ids() == set() and probe.stream_length() == 0
    with httpx.Client(base_url=fleet.url, timeout=30) as client:
        assert submit(client, RADAR, members=1, steps=2).status_code == 202  # still serving
    assert len(_assert_every_job_whole(probe)) == 1
    assert "Traceback" not in fleet.logs()
