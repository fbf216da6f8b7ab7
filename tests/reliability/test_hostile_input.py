"""Hostile input over HTTP: schemathesis against the service's own OpenAPI schema, the corpus of
broken NetCDF files, and bodies past the size limit. No 5xx, a 4xx that names the problem for
every broken file, nothing of it ever queued, and oversized bodies refused while they stream."""

from __future__ import annotations

import re
import select
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.reliability.conftest import Guarded
from tests.service.broken_netcdf import BROKEN_CASES
from tests.support.cluster import RADAR_64, submit, wait_status

pytestmark = pytest.mark.integration

RADAR = RADAR_64.read_bytes()
SCHEMATHESIS_SEED = 20240607
MIN_GENERATED_REQUESTS = 1000
_ACCESS_LINE = re.compile(
    r'uvicorn\.access: .* - "(?P<method>[A-Z]+) (?P<path>\S+) HTTP/1\.1" (\d+)'
)


def _access_lines(fleet_log: str) -> list[tuple[str, int]]:
    """(request line, status) of every request in the API's access log."""
    lines = []
    for line in fleet_log.splitlines():
        match = _ACCESS_LINE.search(line)
        if match:
            lines.append((f"{match['method']} {match['path']}", int(line.rsplit(" ", 1)[1])))
    return lines


def _run_schemathesis(
    guarded: Guarded, tmp: Path, max_examples: int, *extra: str
) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    return subprocess.run(
        [
            binary, "run", f"{guarded.fleet.url}/openapi.json",
            "--checks", "not_a_server_error",
            "--max-examples", str(max_examples),
            "--seed", str(SCHEMATHESIS_SEED),
            "--header", f"Authorization: Bearer {guarded.keys['alpha']}",
            "--workers", "1", "--no-shrink", "--request-timeout", "20",
            "--max-failures", "20", "--output-sanitize", "true",
            *extra,
        ],
        capture_output=True, text=True, timeout=240, cwd=tmp,
    )  # fmt: skip


def test_schemathesis_finds_no_server_error(guarded: Guarded, tmp_path: Path) -> None:
    api_log = guarded.fleet.tmp / "api.log"
    before = len(_access_lines(api_log.read_text(errors="replace")))
    # fuzz every operation (random job ids), then the job operations on a real, finished job
    with guarded.client("alpha") as alpha:
        job = submit(alpha, RADAR, members=1, steps=2, seed=3).json()["id"]
        assert wait_status(alpha, job)["status"] == "successful"
    everything, real_job_only = tmp_path / "all", tmp_path / "real-job"
    everything.mkdir()
    real_job_only.mkdir()
    (real_job_only / "schemathesis.toml").write_text(f'[parameters]\n"path.job_id" = "{job}"\n')
    runs = [
        _run_schemathesis(guarded, everything, 80),
        _run_schemathesis(guarded, real_job_only, 15, "--include-path-regex", "job_id"),
    ]
    requests = _access_lines(api_log.read_text(errors="replace"))[before:]
    server_errors = [line for line in requests if line[1] >= 500]
    for run in runs:
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert server_errors == []
    assert len(requests) >= MIN_GENERATED_REQUESTS, f"only {len(requests)} requests"
    real_job = [status for line, status in requests if job in line]
    assert 200 in real_job, "the second run never reached the real job"
    # ... and the service is healthy afterwards: ready, and it still runs a job
    with guarded.client("alpha") as alpha:
        assert alpha.get("/readyz").status_code == 200
        after = submit(alpha, RADAR, members=1, steps=2, seed=4).json()["id"]
        assert wait_status(alpha, after)["status"] == "successful"
    print(f"schemathesis: {len(requests)} requests, {len(server_errors)} server errors")


@pytest.mark.parametrize("case", BROKEN_CASES.values(), ids=BROKEN_CASES.keys())
def test_broken_file_gets_its_4xx_and_is_never_queued(guarded: Guarded, case) -> None:
    data = case.make()
    jobs_before, stream_before = guarded.probe.job_ids(), guarded.probe.stream_length()
    submitted_before = guarded.probe.counters().get("submitted", 0)
    with guarded.client("corpus") as client:
        response = submit(client, data, members=1, steps=2)
        assert (response.status_code, response.json().get("code")) == (case.status, case.code), (
            response.text
        )
        body = response.json()
        assert response.headers["content-type"] == "application/problem+json"
        assert body["status"] == case.status and len(body["detail"]) > 20
        assert client.get("/v1/nowcasts").json()["total"] == 0
    # no job record, no queue entry, nothing counted: no worker can ever see the file
    assert guarded.probe.job_ids() == jobs_before
    assert guarded.probe.stream_length() == stream_before
    assert guarded.probe.counters().get("submitted", 0) == submitted_before


def _raw_request(url: str, key: str, head_lines: list[str]) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    head = [
        "POST /v1/nowcasts?members=1&steps=2 HTTP/1.1",
        f"Host: {parts.hostname}:{parts.port}",
        f"Authorization: Bearer {key}",
        "Content-Type: application/x-netcdf",
        *head_lines,
    ]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    return sock


def _read_status(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1])


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def test_oversized_body_is_refused_while_streaming(guarded: Guarded) -> None:
    limit = guarded.max_body_bytes
    api_pid = guarded.fleet.api.pid
    key = guarded.keys["alpha"]
    jobs_before = guarded.probe.job_ids()

    # declared too large: 413 before a byte of the body is sent
    sock = _raw_request(guarded.fleet.url, key, [f"Content-Length: {2 * limit}"])
    assert _read_status(sock) == 413
    sock.close()

    # undeclared (chunked), 2x the limit: the answer comes while the client is still sending
    body_size, chunk = 2 * limit, b"\0" * 65536
    baseline = peak = _rss_bytes(api_pid)
    sock = _raw_request(guarded.fleet.url, key, ["Transfer-Encoding: chunked"])
    sent, answered_at = 0, None
    sock.setblocking(False)
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    deadline = time.monotonic() + 60
    while sent < body_size and time.monotonic() < deadline:
        readable, writable, _ = select.select([sock], [sock], [], 1.0)
        if readable:
            answered_at = sent
            break
        if writable:
            try:
                sock.sendall(frame)
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                answered_at = sent
                break
            sent += len(chunk)
            if sent % (1 << 20) == 0:
                peak = max(peak, _rss_bytes(api_pid))
    sock.setblocking(True)
    status = _read_status(sock) if answered_at is not None else None
    sock.close()
    peak = max(peak, _rss_bytes(api_pid))
    assert status == 413, f"no 413 (answered after {answered_at} of {body_size} bytes)"
    assert answered_at < body_size, "the server read the whole oversized body"
    # what it held is bounded by the limit, not the body: growth well under the body's size
    growth = peak - baseline
    assert growth < 1.5 * limit, f"API RSS grew by {growth / 2**20:.0f} MiB"
    assert guarded.probe.job_ids() == jobs_before
    print(
        f"413 after {answered_at / 2**20:.1f} of {body_size / 2**20:.0f} MiB sent; "
        f"API RSS growth {growth / 2**20:.1f} MiB (limit {limit / 2**20:.0f} MiB)"
    )
