"""One error shape everywhere: every non-2xx answer is JSON {"error": "<message>"}."""

from __future__ import annotations

import re

import pytest

from videosvc.web.keys import JOB_RUNNER, SERVICE

from .helpers import Client, Samples, get_video, upload

UNKNOWN = "00000000-0000-4000-8000-000000000000"


async def _error_cases(client: Client, samples: Samples) -> list[tuple[str, str, dict, int]]:  # type: ignore[type-arg]
    video_id = await upload(client, samples.video())
    return [
        ("GET", "/nothing-here", {}, 404),
        ("GET", "/files/", {}, 404),
        ("PUT", "/file/", {}, 405),
        ("GET", "/file/?limit=0", {}, 400),
        ("GET", "/file/?cursor=forged", {}, 400),
        ("GET", f"/file/{video_id}/content", {"headers": {"Range": "bytes=999999999-"}}, 416),
        ("POST", f"/file/{video_id}/", {}, 405),
        ("POST", "/file/", {}, 400),
        ("POST", "/file/", {"data": b"not a video", "headers": {"Content-Type": "video/mp4"}}, 415),
        ("GET", f"/file/{UNKNOWN}/", {}, 404),
        ("GET", "/file/x/", {}, 404),
        ("DELETE", f"/file/{UNKNOWN}", {}, 404),
        ("PATCH", f"/file/{UNKNOWN}/", {"json": {"width": 64, "height": 64}}, 404),
        ("PATCH", f"/file/{video_id}/", {"json": {"width": 63, "height": 64}}, 400),
        ("PATCH", f"/file/{video_id}/", {"data": b"{"}, 400),
        ("PATCH", f"/file/{video_id}/", {"data": b"[" * 100_000}, 413),
    ]


async def test_every_error_is_json_with_an_error_message(client: Client, samples: Samples) -> None:
    for method, path, kwargs, status in await _error_cases(client, samples):
        response = await client.request(method, path, **kwargs)
        assert response.status == status, (method, path, await response.text())
        assert response.content_type == "application/json", (method, path)
        body = await response.json()
        assert list(body) == ["error"], (method, path, body)
        assert isinstance(body["error"], str) and len(body["error"]) > 5, (method, path, body)


async def test_405_lists_the_allowed_methods(client: Client) -> None:
    response = await client.put("/file/")
    assert response.status == 405
    assert "POST" in response.headers["Allow"]
    assert "POST" in (await response.json())["error"]


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_unexpected_failure_is_a_json_500_without_a_traceback(
    client: Client, samples: Samples, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    video_id = await upload(client, samples.video())
    service = client.app[SERVICE]

    # A fault no request can cause for real: the domain layer itself breaks.
    async def broken(*args: object) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(service, "state", broken)  # what GET reads
    monkeypatch.setattr(service, "delete", broken)
    response = await client.request(method, f"/file/{video_id}/")
    assert response.status == 500
    body = await response.json()
    assert list(body) == ["error"]
    assert "secret" not in body["error"] and "Traceback" not in body["error"]


async def test_api_keys_guard_every_file_route_but_not_the_docs(make_client, samples: Samples) -> None:
    client = await make_client(api_keys=("k1", "k2"))
    for method, path in (("POST", "/file/"), ("GET", f"/file/{UNKNOWN}"), ("PATCH", f"/file/{UNKNOWN}/"),
                         ("DELETE", f"/file/{UNKNOWN}/")):  # fmt: skip
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic k1"}):
            response = await client.request(method, path, headers=headers)
            assert response.status == 401, (method, path, headers)
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert "error" in await response.json()
    assert (await client.get("/swagger.json")).status == 200
    assert (await client.get("/swagger")).status == 200

    with samples.video().open("rb") as f:
        response = await client.post(
            "/file/", data=f, headers={"Authorization": "Bearer k2", "Content-Type": "video/mp4"}
        )
    assert response.status == 200
    video_id = (await response.json())["id"]
    response = await client.get(f"/file/{video_id}/", headers={"Authorization": "Bearer k1"})
    assert response.status == 200


async def test_patch_while_shutting_down_is_503(client: Client, samples: Samples) -> None:
    video_id = await upload(client, samples.video())
    await client.app[JOB_RUNNER].close()  # what the app's cleanup does on SIGTERM
    response = await client.patch(f"/file/{video_id}/", json={"width": 64, "height": 48})
    assert response.status == 503
    assert "shutting down" in (await response.json())["error"]
    # The refused job left no trace: not active, and no failure to report.
    body = await get_video(client, video_id)
    assert (body["processing"], body["processingSuccess"]) == (False, None)


async def test_nothing_leaks_versions_free_bytes_or_long_echoes(make_client, samples: Samples) -> None:
    client = await make_client(min_free_bytes=10**18)  # no disk is that large: every upload is a 507
    with samples.video().open("rb") as f:
        response = await client.post("/file/", data=f, headers={"Content-Type": "video/mp4"})
    assert response.status == 507
    message = (await response.json())["error"]
    assert "not enough free" in message and str(10**18) not in message
    assert not re.search(r"\d{7,}", message.replace(str(samples.video().stat().st_size), "")), message
    assert response.headers["Server"] == "videosvc"
    long_id = "x" * 8000
    response = await client.get(f"/file/{long_id}/")
    assert response.status == 404 and len((await response.json())["error"]) < 200
    response = await client.get("/" + "y" * 8000)
    assert response.status == 404 and len((await response.json())["error"]) < 200
