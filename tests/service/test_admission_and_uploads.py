"""Bounded resources at the API: admission control from the job's estimated size, upload time
limits, a cap on concurrent uploads, idle keep-alive connections and slow request heads closed.

One real API process (uvicorn, no workers) on the test Redis, with small limits.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.admission import JobEstimate, estimate_job, refusal
from tests.support.cluster import RADAR_64, Cluster, deployment, submit
from tests.support.stores import make_job

UPLOAD_TIMEOUT_S = 2.0
MAX_UPLOADS = 2
MAX_RESULT_BYTES = 2_000_000
HEADER_TIMEOUT_S = 1.5


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, tiny_model_dir: Path
) -> Iterator[Cluster]:
    with deployment(
        tmp_path_factory.mktemp("limits"),
        redis_url,
        model_dir=tiny_model_dir,
        max_result_bytes=MAX_RESULT_BYTES,
        upload_timeout_s=UPLOAD_TIMEOUT_S,
        max_concurrent_uploads=MAX_UPLOADS,
        keep_alive_timeout_s=1,
        header_timeout_s=HEADER_TIMEOUT_S,
    ) as (cluster, _probe):
        cluster.start_api(workers=0)
        yield cluster


def stalled_upload(url: str, declared: int = 100_000) -> socket.socket:
    """A raw POST that declares `declared` bytes, sends 10 of them and stalls."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    head = [
        "POST /v1/nowcasts?members=1 HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/x-netcdf",
        f"Content-Length: {declared}",
    ]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + b"\x89HDF\r\n\x1a\n\x00\x00")
    return sock


def read_response(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_estimate_counts_the_products_asked_for() -> None:
    job = make_job()  # 2 members, mean only
    assert estimate_job(job.params, 64, 64, 6).result_bytes == 4 * 6 * 64 * 64
    members = job.params.__class__(**{**job.params.to_dict(), "products": ("members", "mean")})
    big = estimate_job(members, 512, 512, 12)
    assert big.result_bytes == 4 * 12 * 512 * 512 * 3
    assert big.worker_peak_bytes > estimate_job(job.params, 512, 512, 12).worker_peak_bytes
    too_much = JobEstimate(result_bytes=10, worker_peak_bytes=2_000)
    assert "worker_memory_bytes" in refusal(too_much, 100, 1_000)
    assert refusal(too_much, 100, 10_000) is None


def test_a_job_over_the_limits_is_refused_at_submit(api: Cluster) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as client:
        radar = RADAR_64.read_bytes()
        refused = submit(client, radar, members=64, thresholds_mm_h="0.1,1,2,5,10,20,50")
        assert refused.status_code == 422, refused.text
        problem = refused.json()
        assert problem["code"] == "job-too-large"
        assert "max_result_bytes" in problem["detail"] and "2 MB" in problem["detail"]
        assert problem["estimate"]["result_bytes"] > MAX_RESULT_BYTES
        assert problem["limits"]["max_result_bytes"] == MAX_RESULT_BYTES
        accepted = submit(client, radar, members=2)
        assert accepted.status_code == 202, accepted.text


def test_a_stalled_upload_times_out(api: Cluster) -> None:
    sock = stalled_upload(api.url)
    started = time.monotonic()
    answer = read_response(sock)
    elapsed = time.monotonic() - started
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"upload-timeout" in answer
    assert UPLOAD_TIMEOUT_S - 0.5 < elapsed < UPLOAD_TIMEOUT_S + 5


def test_concurrent_uploads_are_capped(api: Cluster) -> None:
    stalled = [stalled_upload(api.url) for _ in range(MAX_UPLOADS)]
    try:
        time.sleep(0.3)  # both are being read now
        with httpx.Client(base_url=api.url, timeout=30) as client:
            started = time.monotonic()
            refused = submit(client, RADAR_64.read_bytes(), members=1)
            assert time.monotonic() - started < 1.5  # refused at once, not queued
            assert refused.status_code == 503, refused.text
            assert refused.json()["code"] == "too-many-uploads"
            assert int(refused.headers["Retry-After"]) > 0
            assert client.get("/healthz").status_code == 200  # bodiless requests still served
            for sock in stalled:  # the stalled ones time out and free their slots
                assert read_response(sock).startswith(b"HTTP/1.1 408")
            assert submit(client, RADAR_64.read_bytes(), members=1).status_code == 202
    finally:
        for sock in stalled:
            sock.close()


def test_idle_keep_alive_connections_are_closed(api: Cluster) -> None:
    host, port = api.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        while sock.recv(65536):  # the rest of the answer, then the server closes
            pass
        assert time.monotonic() - started < 5


def read_one_response(sock: socket.socket) -> bytes:
    """One whole response (head + Content-Length body) from a connection kept open."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return data


def trickle_head(sock: socket.socket, head: bytes, limit_s: float) -> tuple[bytes, float]:
    """Send `head` a byte every 0.1 s until the server answers or closes; (answer, seconds).

    Gives up (answer b"") after `limit_s`: a server without a head deadline never closes.
    """
    sock.settimeout(0.1)
    started = time.monotonic()
    for index in range(len(head)):
        if time.monotonic() - started > limit_s:
            return b"", time.monotonic() - started
        try:
            sock.sendall(head[index : index + 1])
        except (BrokenPipeError, ConnectionResetError):
            break  # closed by the server: read what it sent
        try:
            if answer := sock.recv(65536):
                return answer, time.monotonic() - started
            break  # closed without an answer
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
    sock.settimeout(5)
    try:
        return read_response(sock), time.monotonic() - started
    except ConnectionResetError:
        return b"", time.monotonic() - started


@pytest.mark.parametrize("earlier_request", [False, True], ids=["new", "keep-alive"])
def test_a_trickled_request_head_is_cut_off(api: Cluster, earlier_request: bool) -> None:
    host, port = api.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        if earlier_request:  # the deadline also covers the next head on a kept-alive connection
            sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            assert read_one_response(sock).startswith(b"HTTP/1.1 200")
        # a head that would take 100 s at one byte per 0.1 s; it never gets to its end
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 1000
        answer, elapsed = trickle_head(sock, head, limit_s=HEADER_TIMEOUT_S + 8)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    # cut off by the deadline, not at once, although a byte arrived every 0.1 s
    assert HEADER_TIMEOUT_S - 0.3 < elapsed < HEADER_TIMEOUT_S + 3


def test_a_silent_connection_is_closed(api: Cluster) -> None:
    host, port = api.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=HEADER_TIMEOUT_S + 8) as sock:
        started = time.monotonic()
        assert read_response(sock) == b""  # closed, nothing sent: no request was begun
        elapsed = time.monotonic() - started
    assert HEADER_TIMEOUT_S - 0.3 < elapsed < HEADER_TIMEOUT_S + 3


def test_a_head_in_pieces_within_the_deadline_is_served(api: Cluster) -> None:
    host, port = api.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        time.sleep(HEADER_TIMEOUT_S / 2)
        sock.sendall(f"Host: {host}\r\nConnection: close\r\n\r\n".encode())
        answer = read_response(sock)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
