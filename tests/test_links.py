"""Signed links (SPEC §12): one link grants one family of one video until its own expiry, and nothing else."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .helpers import Samples, get_video
from .sse import EventReader

KEY = {"Authorization": "Bearer k"}


async def _keyed(make_client: Any, samples: Samples, **settings: Any) -> tuple[Any, str]:
    client = await make_client(api_keys=("k",), url_signing_key="sign-me", **settings)
    response = await client.post(
        "/file/", data=samples.video().read_bytes(), headers={**KEY, "Content-Type": "video/mp4"}
    )
    return client, (await response.json())["id"]


def _expires(url: str) -> int:
    return int(parse_qs(urlsplit(url).query)["expires"][0])


async def test_a_content_link_opens_its_variant_only(make_client, samples: Samples) -> None:
    client, video_id = await _keyed(make_client, samples)
    info = await get_video(client, video_id, **KEY)
    url = info["contentUrl"]
    assert (await client.get(url)).status == 200
    query = url.split("?", 1)[1]
    # The same signature for the original upload, or for the live stream: refused.
    assert (await client.get(f"/file/{video_id}/content?variant=original&{query}")).status == 403
    assert (await client.get(f"/file/{video_id}/events?{query}")).status == 403
    # And the stream's signature does not open the bytes.
    events_query = info["eventsUrl"].split("?", 1)[1]
    assert (await client.get(f"/file/{video_id}/content?{events_query}")).status == 403


async def test_links_handed_out_through_a_signed_link_never_outlive_it(make_client, samples: Samples) -> None:
    """Finding 8: reopening /events before expiry renewed access forever."""
    client, video_id = await _keyed(make_client, samples, signed_url_ttl_s=3)
    info = await get_video(client, video_id, **KEY)
    link = info["eventsUrl"]
    expires = _expires(link)
    await asyncio.sleep(1.2)  # the link has less left than a fresh one would
    stream = EventReader(await client.get(link))
    first = await stream.next()
    assert first is not None
    inner = first.json()
    for link in (inner["contentUrl"], inner["eventsUrl"]):
        assert _expires(link) <= expires, (link, expires)
    again = EventReader(await client.get(inner["eventsUrl"]))
    assert _expires((await again.next()).json()["eventsUrl"]) <= expires  # type: ignore[union-attr]


async def test_responses_to_signed_requests_are_private(make_client, samples: Samples) -> None:
    client, video_id = await _keyed(make_client, samples)
    info = await get_video(client, video_id, **KEY)
    response = await client.get(info["contentUrl"])
    assert response.status == 200 and "private" in response.headers["Cache-Control"]


async def test_a_signature_is_bounded_like_every_number(make_client, samples: Samples) -> None:
    client, video_id = await _keyed(make_client, samples)
    for expires in ("9" * 5000, "1_0", "\u0661\u0662"):
        response = await client.get(f"/file/{video_id}/content?expires={expires}&signature=x")
        assert response.status == 403, (expires[:10], response.status)
