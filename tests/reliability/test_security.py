"""Security over HTTP: every job operation needs a valid key; one tenant can neither read, cancel,
list, stream, fetch nor infer another's jobs; job ids are unguessable; keys are compared in constant
time; logs hold no key and no uploaded data."""

from __future__ import annotations

import base64
import hmac
import inspect
import secrets
import statistics
import time
import uuid

import httpx
import numpy as np
import pytest

from service.api import auth, deps
from service.api.auth import ApiKeys
from service.queue import jobs
from tests.reliability.conftest import Guarded
from tests.service.broken_netcdf import to_bytes, valid_dataset
from tests.support.cluster import RADAR_64, submit, wait_status

pytestmark = pytest.mark.integration

RADAR = RADAR_64.read_bytes()
JOB_ID_OPERATIONS = (
    ("GET", ""),
    ("GET", "/result"),
    ("GET", "/events"),
    ("GET", "/quicklook.png"),
    ("DELETE", ""),
)


def _job_operations(client: httpx.Client) -> list[tuple[str, str]]:
    """Every operation on tenants' jobs, from the service's own OpenAPI document."""
    schema = client.get("/openapi.json").json()
    return [
        (method.upper(), path)
        for path, item in schema["paths"].items()
        if path.startswith("/v1/nowcasts")
        for method in item
    ]


def test_every_job_operation_needs_a_valid_key(guarded: Guarded) -> None:
    with guarded.client("alpha") as alpha:
        job = submit(alpha, RADAR, members=1, steps=2, seed=1).json()["id"]
        key = guarded.keys["alpha"]
        bad_headers = {
            "none": {},
            "bearer, no key": {"Authorization": "Bearer"},
            "basic scheme": {"Authorization": f"Basic {key}"},
            "no scheme": {"Authorization": key},
            "truncated": {"Authorization": f"Bearer {key[:-1]}"},
            "one more char": {"Authorization": f"Bearer {key}x"},
            "other case": {"Authorization": f"Bearer {key.swapcase()}"},
            "random": {"Authorization": f"Bearer {secrets.token_urlsafe(32)}"},
        }
        operations = _job_operations(alpha)
        # submit, list, status, cancel, events, result, quick-look
        assert len(operations) == 7
        for method, path in operations:
            url = f"{guarded.fleet.url}{path.replace('{job_id}', job)}"
            for name, headers in bad_headers.items():
                extra = {"Content-Type": "application/x-netcdf"} if method == "POST" else {}
                response = httpx.request(
                    method,
                    url,
                    headers={**headers, **extra},
                    content=RADAR if method == "POST" else None,
                    timeout=30,
                )
                assert response.status_code == 401, (method, path, name, response.text)
                assert response.headers["www-authenticate"].startswith("Bearer")
                assert response.json()["code"] in ("missing-api-key", "invalid-api-key")
        # none of it touched the job (the DELETEs included)
        assert wait_status(alpha, job)["status"] == "successful"
        # /v1/models is public by design (what the service accepts); it names no tenant or job
        public = httpx.get(f"{guarded.fleet.url}/v1/models", timeout=30)
        assert public.status_code == 200 and job not in public.text
        assert not any(tenant in public.text for tenant in guarded.keys)


def test_tenant_cannot_reach_another_tenants_job(guarded: Guarded) -> None:
    with guarded.client("alpha") as alpha, guarded.client("beta") as beta:
        headers = {"Content-Type": "application/x-netcdf", "Idempotency-Key": "order-7"}
        created = alpha.post("/v1/nowcasts", params={"steps": 2}, content=RADAR, headers=headers)
        job = created.json()["id"]
        assert wait_status(alpha, job)["status"] == "successful"
        for method, suffix in JOB_ID_OPERATIONS:
            missing = str(uuid.uuid4())
            theirs = beta.request(method, f"/v1/nowcasts/{job}{suffix}")
            nobody = beta.request(method, f"/v1/nowcasts/{missing}{suffix}")
            assert theirs.status_code == nobody.status_code == 404, (method, suffix)
            # byte for byte the answer for an id that does not exist
            assert theirs.text.replace(job, "<id>") == nobody.text.replace(missing, "<id>")
            assert theirs.headers["content-type"] == nobody.headers["content-type"]
            assert sorted(theirs.headers) == sorted(nobody.headers)
        listed = beta.get("/v1/nowcasts", params={"limit": 100}).json()
        assert job not in [item["id"] for item in listed["items"]]
        assert all(item["id"] != job for item in listed["items"])
        # the same Idempotency-Key in another tenant is another job, not alpha's (and no 422
        # that would tell beta that alpha used the key)
        same = beta.post("/v1/nowcasts", params={"steps": 2}, content=RADAR, headers=headers)
        assert same.status_code == 202 and same.json()["id"] != job
        assert "idempotent-replayed" not in same.headers
        beta.delete(f"/v1/nowcasts/{same.json()['id']}")
        # beta's DELETE changed nothing for alpha
        assert alpha.get(f"/v1/nowcasts/{job}").json()["status"] == "successful"
        assert alpha.get(f"/v1/nowcasts/{job}/result").status_code == 200


def test_foreign_and_missing_ids_answer_in_the_same_time(guarded: Guarded) -> None:
    with guarded.client("alpha") as alpha, guarded.client("beta") as beta:
        job = submit(alpha, RADAR, members=1, steps=2, seed=2).json()["id"]
        wait_status(alpha, job)
        for suffix in ("", "/result"):
            foreign, missing = [], []
            for round_ in range(60):
                pair = [(foreign, job), (missing, str(uuid.uuid4()))]
                for times, job_id in pair if round_ % 2 else pair[::-1]:  # interleaved
                    started = time.perf_counter()
                    assert beta.get(f"/v1/nowcasts/{job_id}{suffix}").status_code == 404
                    times.append(time.perf_counter() - started)
            foreign_s, missing_s = statistics.median(foreign), statistics.median(missing)
            print(f"404{suffix or ' status'}: foreign {foreign_s * 1e3:.2f} ms, "
                  f"missing {missing_s * 1e3:.2f} ms (medians of 60)")  # fmt: skip
            assert abs(foreign_s - missing_s) <= max(0.0005, 0.25 * missing_s)


def test_job_ids_are_uuid4_from_the_os_random_source(guarded: Guarded) -> None:
    with guarded.client("alpha") as alpha:
        listed = alpha.get("/v1/nowcasts", params={"limit": 100}).json()
    served = [item["id"] for item in listed["items"]]
    assert served
    for job_id in served:
        parsed = uuid.UUID(job_id)
        assert str(parsed) == job_id and parsed.version == 4 and parsed.variant == uuid.RFC_4122
    # the entropy source: uuid4 = 122 bits of os.urandom (the CSPRNG), not time or a counter
    assert "uuid.uuid4()" in inspect.getsource(jobs.new_job_id)
    assert "os.urandom(16)" in inspect.getsource(uuid.uuid4)
    # and the 122 free bits of what new_job_id makes are balanced and never repeat
    ids = [jobs.new_job_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    raw = np.frombuffer(b"".join(uuid.UUID(i).bytes for i in ids), np.uint8).reshape(len(ids), 16)
    ones = np.unpackbits(raw, axis=1).mean(axis=0)  # (128,) frequency of 1 per bit
    fixed = set(range(48, 52)) | {64, 65}  # version (0100) and variant (10) bits
    free = [bit for bit in range(128) if bit not in fixed]
    assert len(free) == 122
    assert np.all(np.abs(ones[free] - 0.5) < 0.02), ones[free].min()
    assert list(ones[48:52]) == [0, 1, 0, 0] and list(ones[64:66]) == [1, 0]


def test_api_keys_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[int, int]] = []
    compare_digest = hmac.compare_digest

    def recording_compare_digest(a: bytes, b: bytes) -> bool:
        compared.append((len(a), len(b)))
        return compare_digest(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", recording_compare_digest)
    stored = [secrets.token_urlsafe(32) for _ in range(3)]
    keys = ApiKeys({key: f"tenant-{i}" for i, key in enumerate(stored)})
    presented = [*stored, "", "x", stored[0][:-1], stored[0] + "x", "k" * 10_000]
    for key in presented:
        compared.clear()
        tenant = keys.tenant_for(key)
        assert tenant == (f"tenant-{stored.index(key)}" if key in stored else None)
        # every stored key, every time, on fixed-length digests: neither the position of a
        # match, nor a shared prefix, nor the presented length shows in the work done
        assert compared == [(32, 32)] * len(stored), key[:8]
    # the request path takes the tenant from this lookup and compares keys nowhere else
    assert "tenant_for(" in inspect.getsource(deps.get_tenant)
    for source in (inspect.getsource(deps.get_tenant), inspect.getsource(ApiKeys.tenant_for)):
        assert "==" not in source and "break" not in source


def _log_bytes(guarded: Guarded) -> bytes:
    return b"\n".join(path.read_bytes() for path in sorted(guarded.fleet.tmp.glob("*.log")))


def test_logs_hold_no_key_and_no_payload(guarded: Guarded) -> None:
    marker = f"PAYLOAD-{secrets.token_hex(8)}"
    wrong_key = secrets.token_urlsafe(32)
    marked = valid_dataset()
    marked["precip"].attrs["units"] = marker  # a wrong unit the 422 detail may echo
    with guarded.client("alpha") as alpha:
        assert submit(alpha, f"{marker} is not NetCDF".encode()).status_code == 415
        assert submit(alpha, to_bytes(marked)).status_code == 422
        params = f'{{"members": 1, "steps": 2, "{marker}": 1}}'
        rejected = alpha.post(
            "/v1/nowcasts", files={"radar": ("r.nc", RADAR)}, data={"params": params}
        )
        assert rejected.status_code == 422
        job = submit(alpha, RADAR, members=1, steps=2, seed=8).json()["id"]
        assert wait_status(alpha, job)["status"] == "successful"
        denied = httpx.get(
            f"{guarded.fleet.url}/v1/nowcasts", headers={"Authorization": f"Bearer {wrong_key}"}
        )
        assert denied.status_code == 401
    time.sleep(0.5)  # let the worker's last lines reach its log
    logs = _log_bytes(guarded)
    # the logs are real: this job went through API and worker, DEBUG lines included
    assert logs.count(f"job={job}".encode()) >= 2 and b" DEBUG " in logs
    for key in [*guarded.keys.values(), wrong_key]:
        for form in (key, key[:16], base64.b64encode(key.encode()).decode()):
            assert form.encode() not in logs, "an API key is in the logs"
    assert marker.encode() not in logs, "uploaded content is in the logs"
    # no stretch of the radar file, raw, escaped, hex or base64 (stretches of varied bytes: a
    # run of zeros also spells fuzzed URLs in the access log)
    windows = [RADAR[i : i + 24] for i in range(0, len(RADAR) - 24, 24)]
    varied = [(i * 24, w) for i, w in enumerate(windows) if len(set(w)) >= 16]
    assert len(varied) >= 100
    for start, window in varied[:: len(varied) // 40]:
        for form in (
            window,
            repr(window)[2:-1].encode(),
            window.hex().encode(),
            base64.b64encode(window)[:24],
        ):
            assert form not in logs, f"radar bytes at offset {start} are in the logs"
