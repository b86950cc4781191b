"""GET /file/: the catalogue, newest first, in pages that hold still while videos come and go."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from .helpers import Client, Samples, get_video, upload


async def _pages(client: Client, limit: int, **params: str) -> list[list[dict[str, Any]]]:
    pages, cursor = [], None
    while True:
        query = {"limit": str(limit), **params, **({"cursor": cursor} if cursor else {})}
        response = await client.get("/file/", params=query)
        assert response.status == 200, await response.text()
        body = await response.json()
        pages.append(body["items"])
        cursor = body["next"]
        if cursor is None:
            assert "Link" not in response.headers
            return pages
        link = response.headers["Link"]
        assert link.endswith('>; rel="next"') and "cursor=" in link


async def test_an_empty_catalogue(client: Client) -> None:
    response = await client.get("/file/")
    assert response.status == 200
    assert await response.json() == {"items": [], "next": None}


async def test_pages_are_newest_first_and_items_have_the_get_shape(client: Client, samples: Samples) -> None:
    ids = [await upload(client, samples.video(), filename=f"{i}.mp4") for i in range(5)]
    pages = await _pages(client, limit=2)
    assert [len(page) for page in pages] == [2, 2, 1]
    listed = [item["id"] for page in pages for item in page]
    assert listed == ids[::-1]
    for item in pages[0]:
        assert item == await get_video(client, item["id"])
    # The default page is 20; the Link header carries the next page's URL as is.
    response = await client.get("/file/", params={"limit": "2"})
    link = response.headers["Link"]
    follow = await client.get(link[1 : link.index(">")])
    assert [item["id"] for item in (await follow.json())["items"]] == ids[::-1][2:4]


@pytest.mark.parametrize("limit", ["0", "101", "-1", "x", "1.5"])
async def test_limit_is_1_to_100(client: Client, limit: str) -> None:
    response = await client.get("/file/", params={"limit": limit})
    assert response.status == 400
    assert "limit" in (await response.json())["error"]


async def test_forged_or_altered_cursors_are_400(client: Client, samples: Samples) -> None:
    for _ in range(3):
        await upload(client, samples.video())
    cursor = (await (await client.get("/file/", params={"limit": "1"})).json())["next"]
    assert cursor
    body, _, tag = cursor.partition(".")
    forged = [
        "forged",
        "eyJjIjoiMjAyNiJ9",  # base64 of a plausible state, unsigned
        body + "." + tag[:-1] + ("A" if tag[-1] != "A" else "B"),
        body[:-2] + "xx." + tag,
        "²V.\U00101529",  # not ASCII at all (found by schemathesis: a 500 once)
        "",
    ]
    for bad in forged:
        response = await client.get("/file/", params={"cursor": bad})
        assert response.status == 400, bad
        assert "cursor" in (await response.json())["error"]


async def test_processing_filters_by_an_active_job(make_client, samples: Samples) -> None:
    client = await make_client(x264_preset="veryslow", workers=1)
    idle = await upload(client, samples.video())
    busy = await upload(client, samples.video(1280, 720, duration_s=5))
    assert (await client.patch(f"/file/{busy}/", json={"width": 1920, "height": 1080})).status == 200
    yes = await (await client.get("/file/", params={"processing": "true"})).json()
    no = await (await client.get("/file/", params={"processing": "false"})).json()
    assert [item["id"] for item in yes["items"]] == [busy]
    assert [item["id"] for item in no["items"]] == [idle]
    assert yes["items"][0]["processing"] is True
    assert (await client.get("/file/", params={"processing": "maybe"})).status == 400


async def test_paging_while_videos_come_and_go_never_repeats_and_never_skips_a_survivor(
    client: Client, samples: Samples
) -> None:
    path = samples.video(64, 64, duration_s=0.2, audio=False)
    survivors = [await upload(client, path) for _ in range(12)]
    doomed = [await upload(client, path) for _ in range(12)]
    random.Random(7).shuffle(doomed)
    stop = asyncio.Event()

    async def churn() -> None:
        while not stop.is_set():  # new videos, and deletions of the doomed ones
            await upload(client, path)
            if doomed:
                assert (await client.delete(f"/file/{doomed.pop()}/")).status == 200

    churning = asyncio.create_task(churn())
    try:
        seen: list[str] = []
        cursor = None
        while True:
            query = {"limit": "3", **({"cursor": cursor} if cursor else {})}
            body = await (await client.get("/file/", params=query)).json()
            seen += [item["id"] for item in body["items"]]
            cursor = body["next"]
            await asyncio.sleep(0.05)  # let the churn land between pages
            if cursor is None:
                break
    finally:
        stop.set()
        await churning
    assert len(seen) == len(set(seen)), "an item was listed twice"
    assert set(survivors) <= set(seen), "a video that existed throughout was skipped"
