"""The page at / (SPEC §9), driven in a real browser (Debian's chromium) against the real server.

Each test watches the wire (requests and responses) and the console: a page
that logs an error the test did not cause on purpose fails.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .browser import needs_chromium
from .conftest import RESULTS
from .helpers import Samples, poll_until
from .server import ServerProcess

pytestmark = needs_chromium

CHUNK = 8 * 1024 * 1024
#: How the page writes sizes (640 by 360).
X = "\N{MULTIPLICATION SIGN}"
#: Generous: a resize or a 30 MB upload through the browser, on a loaded CI machine.
WAIT_MS = 60_000


@dataclass
class Wire:
    """What the page sent and received, and what it logged."""

    requests: list[Any] = field(default_factory=list)
    responses: list[Any] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def sent(self, method: str, pattern: str) -> list[Any]:
        return [r for r in self.requests if r.method == method and re.search(pattern, r.url)]

    def unexpected_errors(self, *allowed: str) -> list[str]:
        return [e for e in self.console_errors if not any(a in e for a in allowed)]


async def open_page(page: Any, url: str) -> Wire:
    wire = Wire()
    page.on("request", lambda r: wire.requests.append(r))
    page.on("response", lambda r: wire.responses.append(r))
    page.on("console", lambda m: wire.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: wire.console_errors.append(f"uncaught: {e}"))
    await page.goto(url)
    return wire


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _api(server: ServerProcess, method: str, path: str, key: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(server.url + path, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


async def _upload(page: Any, path: Path) -> str:
    """Pick a file, wait until the page says it is stored; returns the video's id (from the detail)."""
    await page.set_input_files("#file-input", str(path))
    return await _stored(page, path)


async def _stored(page: Any, path: Path) -> str:
    """Wait until the page says the upload of `path` is stored; returns the video's id."""
    row = page.locator("#uploads li", has_text=path.name).first
    await row.locator(".details", has_text="Stored").wait_for(timeout=WAIT_MS)
    await page.locator("#detail-title", has_text=path.name).wait_for(timeout=WAIT_MS)
    return str(await page.locator("#videos li[data-id] button[aria-current=true]").evaluate(
        "b => b.parentElement.dataset.id"
    ))  # fmt: skip


async def _until(page: Any, expression: str) -> None:
    """Poll a JavaScript expression (wait_for_function would need eval, which the page's CSP forbids)."""
    await poll_until(lambda: page.evaluate(expression), expression, WAIT_MS / 1000)


def _fragment(url: str) -> dict[str, list[str]]:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(url).fragment)


def _keep_screenshot(name: str, source: Path) -> None:
    RESULTS.mkdir(exist_ok=True)
    shutil.copy(source, RESULTS / name)


@pytest.mark.parametrize("key", [None, "secret"], ids=["open", "with-api-keys"])
async def test_upload_list_play_seek_resize_and_delete_through_the_page(
    page: Any, data_dir: Path, samples: Samples, key: str | None, tmp_path: Path
) -> None:
    source = samples.noisy(6)  # 34 MB: several tus chunks, and a seek far past what was buffered
    with ServerProcess(data_dir, **({"api_keys": key} if key else {})) as server:
        wire = await open_page(page, server.url + "/")
        allowed: tuple[str, ...] = ()
        if key:
            # The key is asked for before anything else, and a wrong one is said to be wrong.
            await page.locator("#key-panel").wait_for()
            assert json.loads(await page.locator("#config").text_content())["apiKeys"] is True
            assert not wire.sent("GET", "/file/")  # asked before the first call, not after a 401
            await page.fill("#key-input", "wrong")
            await page.click("#key-form button")
            await page.locator("#message", has_text="refused").wait_for()
            await page.fill("#key-input", key)
            await page.click("#key-form button")
            allowed = ("401",)
        await page.locator("#empty").wait_for()

        video_id = await _upload(page, source)
        assert len(wire.sent("PATCH", "/uploads/")) >= source.stat().st_size // CHUNK
        assert _sha256(data_dir / "videos" / f"{video_id}.mp4") == _sha256(source)
        listed = page.locator(f'#videos li[data-id="{video_id}"]')
        await listed.locator(".details", has_text=f"640{X}360").wait_for()

        if key:  # typed once: kept in the tab across a reload
            await page.reload()
            await listed.wait_for()
            assert await page.locator("#key-panel").is_hidden()
            await listed.locator("button").click()

        # Play, then seek near the end: a Range request far into the file, answered 206.
        player = page.locator("#player")
        await _until(page, "document.getElementById('player').readyState >= 1")
        seeked = await player.evaluate(
            """(v) => new Promise((done) => {
                v.muted = true;
                v.addEventListener("seeked", () => done(v.currentTime), { once: true });
                v.play().then(() => { v.currentTime = 5.5; }, (e) => done("play failed: " + e));
            })"""
        )
        assert abs(seeked - 5.5) < 0.5, seeked
        ranges = [
            (r.request.headers.get("range", ""), r.status) for r in wire.responses if "/content" in r.url
        ]
        far = [(h, s) for h, s in ranges if h.startswith("bytes=") and not h.startswith("bytes=0-")]
        assert far and all(s == 206 for _, s in far), ranges
        assert max(int(h[6:].split("-")[0]) for h, _ in far) > source.stat().st_size // 2
        if key:  # the player had no header to send: the signed link did it
            assert all("signature=" in r.url for r in wire.responses if "/content" in r.url)

        # Resize with a preset; the state arrives by server-sent events, not by polling.
        gets_before = len(wire.sent("GET", rf"/file/{video_id}/$"))
        src_before = await player.evaluate("(v) => v.currentSrc")
        await page.select_option("#preset", "256x144")
        await page.click("#resize")
        await page.locator("#job-text", has_text=f"Resized to 256{X}144").wait_for(timeout=WAIT_MS)
        await page.locator("#facts", has_text=f"256{X}144").wait_for()
        assert wire.sent("GET", rf"/file/{video_id}/events")
        assert len(wire.sent("GET", rf"/file/{video_id}/$")) == gets_before
        resized = _api(server, "GET", f"/file/{video_id}/", key)[1]
        assert resized["width"] == 256
        # The player plays the new rendition, not the old one from the browser's cache: each has its
        # own URL (#v=updatedAt). The download link needs none (no-cache): it gets the new one too.
        await _until(page, "document.getElementById('player').videoWidth === 256")
        src_after = await player.evaluate("(v) => v.currentSrc")
        assert src_after != src_before and _fragment(src_after)["v"] == [resized["updatedAt"]], src_after
        async with page.expect_download() as download:
            await page.click("#download")
        assert Path(await (await download.value).path()).stat().st_size == resized["size"]
        shot = tmp_path / "page.png"
        await page.screenshot(path=str(shot))
        _keep_screenshot(f"page-{'keys' if key else 'open'}.png", shot)

        # Delete asks first; "Keep it" keeps it.
        await page.click("#delete")
        await page.locator("#confirm-delete").wait_for()
        await page.click("#confirm-delete button[value=cancel]")
        assert await listed.count() == 1
        await page.click("#delete")
        await page.click("#confirm-yes")
        await listed.wait_for(state="detached")
        assert await page.locator("#detail").is_hidden()
        assert _api(server, "GET", f"/file/{video_id}/", key)[0] == 404
        assert wire.unexpected_errors(*allowed) == []
    assert "Traceback" not in server.log()


async def test_an_upload_cut_by_the_network_says_so_and_resumes_by_itself(
    page: Any, data_dir: Path, samples: Samples
) -> None:
    source = samples.noisy(2)  # two chunks
    patches = 0
    back = asyncio.Event()

    async def cut_from_the_second_patch_until_back(route: Any) -> None:
        nonlocal patches
        if route.request.method == "PATCH":
            patches += 1
        if patches >= 2 and not back.is_set():
            await route.abort("connectionreset")
            return
        await route.continue_()

    with ServerProcess(data_dir) as server:
        wire = await open_page(page, server.url + "/")
        await page.route("**/uploads/*", cut_from_the_second_patch_until_back)
        await page.evaluate(  # every text the row shows, in order
            """() => {
                window.said = [];
                const uploads = document.getElementById("uploads");
                const note = () => window.said.push(uploads.querySelector(".details").textContent);
                const all = { subtree: true, childList: true, characterData: true };
                new MutationObserver(note).observe(uploads, all);
            }"""
        )
        await page.set_input_files("#file-input", str(source))
        row = page.locator("#uploads li", has_text=source.name)
        await row.locator(".details", has_text="Reconnecting").wait_for(timeout=WAIT_MS)  # tus retrying
        back.set()
        video_id = await _stored(page, source)
        said = await page.evaluate("window.said")
        after = said[said.index("Reconnecting…") :]
        assert any(re.fullmatch(r"\d+% of .*", text) for text in after), said  # bytes flowing: said again
        offsets = [r.headers.get("upload-offset") for r in wire.sent("PATCH", "/uploads/")]
        assert offsets == ["0", str(CHUNK), str(CHUNK)], offsets  # the dropped chunk, sent again
        assert wire.sent("HEAD", "/uploads/")  # where to resume was asked, not guessed
        assert _sha256(data_dir / "videos" / f"{video_id}.mp4") == _sha256(source)
        assert wire.unexpected_errors("ERR_CONNECTION_RESET", "net::ERR_FAILED") == []


async def test_an_upload_cut_by_a_reload_resumes_when_the_file_is_picked_again(
    page: Any, data_dir: Path, samples: Samples
) -> None:
    source = samples.noisy(2)
    first_chunk_in = asyncio.Event()
    release = asyncio.Event()

    async def stall_after_the_first_chunk(route: Any) -> None:
        if route.request.method == "PATCH" and first_chunk_in.is_set():
            await release.wait()  # a connection that hangs until the tab goes away
            return
        await route.continue_()
        if route.request.method == "PATCH":
            first_chunk_in.set()

    with ServerProcess(data_dir) as server:
        await open_page(page, server.url + "/")
        await page.route("**/uploads/*", stall_after_the_first_chunk)
        await page.set_input_files("#file-input", str(source))
        await asyncio.wait_for(first_chunk_in.wait(), WAIT_MS / 1000)
        await page.unroute("**/uploads/*")
        release.set()
        wire = await open_page(page, server.url + "/")  # the tab is closed and opened again
        video_id = await _upload(page, source)
        assert not wire.sent("POST", "/uploads/")  # no new upload: the old one resumed
        assert wire.sent("HEAD", "/uploads/")
        offsets = [r.headers.get("upload-offset") for r in wire.sent("PATCH", "/uploads/")]
        assert offsets and offsets[0] != "0", offsets
        assert _sha256(data_dir / "videos" / f"{video_id}.mp4") == _sha256(source)
        assert len(_api(server, "GET", "/file/")[1]["items"]) == 1

        # Stored: forgotten, so picking the file again is a new upload, not a resume.
        assert await page.evaluate("Object.keys(localStorage).filter((k) => k.startsWith('tus::'))") == []
        await page.set_input_files("#file-input", str(source))
        await page.locator("#uploads li .details", has_text="Stored").nth(1).wait_for(timeout=WAIT_MS)
        assert len(wire.sent("POST", "/uploads/")) == 1 and len(wire.sent("HEAD", "/uploads/")) == 1


async def test_the_catalogue_pages_with_more(page: Any, data_dir: Path, samples: Samples) -> None:
    body = samples.video(96, 64).read_bytes()
    with ServerProcess(data_dir) as server:
        for n in range(25):  # one page of 20, and 5 more
            url = f"{server.url}/file?filename=v{n:02d}.mp4"
            response = await page.request.post(url, data=body, headers={"Content-Type": "video/mp4"})
            assert response.status == 200
        wire = await open_page(page, server.url + "/")
        items = page.locator("#videos li[data-id]")
        await items.nth(19).wait_for()
        assert await items.count() == 20
        assert await items.first.text_content() and "v24.mp4" in (await items.first.text_content() or "")
        await page.click("#more")
        await items.nth(24).wait_for()
        assert await items.count() == 25
        ids = await items.evaluate_all("items => items.map((item) => item.dataset.id)")
        assert len(set(ids)) == 25
        assert await page.locator("#more").is_hidden()
        assert "v00.mp4" in (await items.last.text_content() or "")  # oldest last
        assert len(wire.sent("GET", r"/file/\?.*cursor=")) == 1
        assert wire.unexpected_errors() == []


async def test_a_phone_sized_screen_and_a_keyboard_are_enough(
    page: Any, data_dir: Path, samples: Samples
) -> None:
    source = samples.video(320, 240, duration_s=2)
    await page.set_viewport_size({"width": 360, "height": 740})
    with ServerProcess(data_dir) as server:
        wire = await open_page(page, server.url + "/")
        await page.locator("#empty").wait_for()
        assert await page.evaluate("document.documentElement.scrollWidth") <= 360

        async def tab_to(selector: str, limit: int = 30) -> None:
            for _ in range(limit):
                await page.keyboard.press("Tab")
                if await page.evaluate(f"document.activeElement === document.querySelector('{selector}')"):
                    return
            raise AssertionError(f"Tab never reached {selector}")

        # Listening turns on Playwright's file chooser interception, a message of its own: on before
        # the key press (expect_file_chooser, set up with the press, could lose that race when loaded).
        chooser: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        page.on("filechooser", lambda opened: chooser.done() or chooser.set_result(opened))
        await tab_to("#pick")
        await page.keyboard.press("Enter")
        await (await asyncio.wait_for(chooser, WAIT_MS / 1000)).set_files(str(source))
        await page.locator("#detail-title", has_text=source.name).wait_for(timeout=WAIT_MS)
        assert await page.evaluate("document.documentElement.scrollWidth") <= 360

        await tab_to("#preset")
        await page.keyboard.press("End")  # "Exact size..."
        await page.keyboard.press("ArrowUp")  # the smallest preset
        chosen = await page.locator("#preset").input_value()
        assert chosen != "exact" and chosen != "320x240"
        await tab_to("#resize")
        await page.keyboard.press("Enter")
        width = chosen.split("x")[0]
        await page.locator("#facts", has_text=f"{width}{X}").wait_for(timeout=WAIT_MS)

        await tab_to("#delete")
        await page.keyboard.press("Enter")
        assert await page.evaluate("document.activeElement.value") == "cancel"  # the safe choice first
        await page.keyboard.press("Tab")
        await page.keyboard.press("Enter")
        await page.locator("#empty").wait_for()
        # Focus moves to the picker once the DELETE answers; the live stream's "deleted" event,
        # which also empties the list, can come first.
        await _until(page, "document.activeElement.id === 'pick'")
        shot = RESULTS / "page-phone.png"
        RESULTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(shot), full_page=True)
        assert wire.unexpected_errors() == []


async def test_errors_are_the_apis_own_messages_and_sizes_are_checked_like_the_api(
    page: Any, data_dir: Path, samples: Samples, tmp_path: Path
) -> None:
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_text("these are my notes, not a video\n" * 100)
    limits = {"max_job_pixel_frames": 100_000, "max_output_pixels": 250_000, "max_upload_bytes": 2_000_000}
    with ServerProcess(data_dir, **limits) as server:
        # The page runs only its own code, talks only to its server, and is framed by no one.
        policy = (await page.request.get(server.url + "/")).headers["content-security-policy"]
        rules = ["script-src 'self'", "connect-src 'self'", "object-src 'none'", "frame-ancestors 'none'"]
        assert all(rule in policy for rule in rules), policy
        wire = await open_page(page, server.url + "/")
        await page.locator("#empty").wait_for()
        await page.set_input_files("#file-input", str(not_a_video))
        failed = page.locator("#uploads li.failed .details")
        await failed.wait_for(timeout=WAIT_MS)
        message = await failed.text_content()
        assert message and "not an MP4" in message, message  # the API's 415, as it said it
        # Its bar stays where the server's confirmations left it (not full), in the failed colour.
        bar = page.locator("#uploads li.failed progress")
        value, colour = await bar.evaluate("(b) => [b.value, getComputedStyle(b).accentColor]")
        failed_colour = await failed.evaluate("(text) => getComputedStyle(text).color")
        assert value < 100 and colour == failed_colour, (value, colour, failed_colour)
        assert _api(server, "GET", "/file/")[1]["items"] == []
        # Over max_upload_bytes: refused by the page before a byte is sent.
        posts = len(wire.sent("POST", "/uploads/"))
        await page.set_input_files("#file-input", str(samples.noisy(1)))
        await page.locator("#uploads li.failed .details", has_text="at most 2.0 MB").wait_for()
        # Empty: said in the page's words (not tus's Upload-Length), and nothing sent either.
        empty = tmp_path / "empty.mp4"
        empty.write_bytes(b"")
        await page.set_input_files("#file-input", str(empty))
        refused = page.locator("#uploads li.failed", has_text="empty.mp4 is empty: pick a video file")
        await refused.wait_for()
        assert await refused.locator("progress").is_hidden()  # nothing was sent: no bar
        assert len(wire.sent("POST", "/uploads/")) == posts

        await _upload(page, samples.video(320, 240, duration_s=2))
        await page.select_option("#preset", "exact")
        for width, height, expected in [
            ("161", "120", "Width must be even"),
            ("320", "20", "Height must be greater than 20"),
            ("9000", "120", "at most 8192"),
            ("640", "480", "At most 250,000 pixels"),
        ]:
            await page.fill("#width", width)
            await page.fill("#height", height)
            await page.click("#resize")
            await page.locator("#resize-error", has_text=expected).wait_for()
        assert not wire.sent("PATCH", "/file/")  # refused before asking the server
        await page.fill("#width", "600")
        await page.fill("#height", "400")
        await page.click("#resize")
        await page.locator("#resize-error", has_text="max_job_pixel_frames").wait_for()  # the API's 400
        assert wire.unexpected_errors("415", "400") == []


@pytest.mark.parametrize("key", [None, "secret"], ids=["open", "with-api-keys"])
async def test_the_page_plays_adaptively_with_hls_js_and_switches_when_a_quality_is_picked(
    page: Any, data_dir: Path, samples: Samples, key: str | None, tmp_path: Path
) -> None:
    source = samples.make(
        "page_hls.mp4",
        ["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:duration=8", "-f", "lavfi", "-i",
         "sine=duration=8", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-shortest"],
    )  # fmt: skip
    settings = {"hls_enabled": "true", "hls_ladder": "360,240,180", "hls_segment_s": 2}
    with ServerProcess(data_dir, **settings, **({"api_keys": key} if key else {})) as server:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        with source.open("rb") as f:
            request = urllib.request.Request(
                server.url + "/file/?filename=holiday.mp4",
                data=f.read(),
                headers={**headers, "Content-Type": "video/mp4"},
            )
        stored = await asyncio.to_thread(lambda: json.load(urllib.request.urlopen(request, timeout=30)))
        video_id = stored["id"]
        await poll_until(
            lambda: [r["state"] for r in _api(server, "GET", f"/file/{video_id}/", key)[1]["renditions"]],
            "every rendition ready", until=lambda states: states == ["ready"] * 3,
        )  # fmt: skip

        wire = await open_page(page, server.url + "/")
        if key:
            await page.locator("#key-panel").wait_for()
            await page.fill("#key-input", key)
            await page.click("#key-form button")
        await page.locator(f'#videos li[data-id="{video_id}"] button').click()
        await _until(page, "document.getElementById('player').dataset.version?.endsWith(':hls')")
        await page.locator("#quality-row").wait_for()
        options = await page.locator("#quality option").all_text_contents()
        assert options == ["Auto", f"640{X}360", f"426{X}240", f"320{X}180"]
        played = await page.locator("#player").evaluate(
            """(v) => new Promise((done) => {
                v.muted = true;
                v.addEventListener("timeupdate", () => v.currentTime > 0.5 && done(v.currentTime));
                v.play().catch((e) => done("play failed: " + e));
            })"""
        )
        assert isinstance(played, float), played
        # A quality picked by hand: hls.js switches to it (the next segments come from its folder).
        smallest = await page.locator("#quality option", has_text=f"320{X}180").get_attribute("value")
        await page.select_option("#quality", smallest)
        await _until(page, f"document.getElementById('player').dataset.level === '{smallest}'")
        await _until(page, "document.getElementById('player').videoHeight === 180")
        fetched = [r.url for r in wire.responses if "/hls/" in r.url]
        assert any("/v2/seg" in url for url in fetched), fetched
        assert all(r.status in (200, 206) for r in wire.responses if "/hls/" in r.url)
        assert not [r for r in wire.responses if f"/file/{video_id}/content" in r.url]  # not the MP4
        if key:  # the player sent no header: the signature in the path did it, for every file
            assert all(f"/file/{video_id}/hls/s/" in url for url in fetched), fetched
        assert wire.unexpected_errors() == []
        shot = tmp_path / "page-hls.png"
        await page.screenshot(path=str(shot))
        _keep_screenshot(f"page-hls-{'keys' if key else 'open'}.png", shot)
    assert "Traceback" not in server.log()


@pytest.mark.parametrize("key", [None, "secret"], ids=["open", "with-api-keys"])
async def test_the_page_shows_posters_dates_and_storyboard_previews_over_the_seek_bar(
    page: Any, data_dir: Path, samples: Samples, key: str | None, tmp_path: Path
) -> None:
    source = samples.make(
        "page_pictures.mp4",
        ["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration=12", "-c:v", "libx264",
         "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p"],
    )  # fmt: skip
    with ServerProcess(data_dir, pictures_enabled="true", **({"api_keys": key} if key else {})) as server:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        with source.open("rb") as f:
            request = urllib.request.Request(
                server.url + "/file/?filename=garden.mp4",
                data=f.read(),
                headers={**headers, "Content-Type": "video/mp4"},
            )
        video_id = (await asyncio.to_thread(lambda: json.load(urllib.request.urlopen(request, timeout=30))))[
            "id"
        ]
        await poll_until(
            lambda: _api(server, "GET", f"/file/{video_id}/", key)[1]["pictures"]["state"],
            "the pictures", until=lambda state: state == "ready",
        )  # fmt: skip

        wire = await open_page(page, server.url + "/")
        if key:
            await page.locator("#key-panel").wait_for()
            await page.fill("#key-input", key)
            await page.click("#key-form button")
        row = page.locator(f'#videos li[data-id="{video_id}"] button')
        # The row: its poster (loaded, not a broken image) and when it was uploaded.
        poster = row.locator("img.poster")
        await poster.wait_for()
        await _until(
            page, f"document.querySelector('li[data-id=\"{video_id}\"] img.poster').naturalWidth === 320"
        )
        assert await row.locator("time.when").text_content() == "just now"
        await row.click()
        await _until(page, "document.getElementById('player').poster.includes('/poster.jpg')")

        # Hovering the seek bar at 93% of it (11.2 s of 12) shows the storyboard's tile for 11-12 s:
        # one tile a second, 160x90, ten a row, so the second tile of the second row.
        scrub = page.locator("#scrub")
        await scrub.wait_for()
        await _until(page, "document.getElementById('preview') !== null")
        box = await scrub.bounding_box()
        assert box is not None
        await page.mouse.move(box["x"] + box["width"] * 0.93, box["y"] + box["height"] / 2)
        await page.locator("#preview").wait_for()
        await _until(
            page, "document.getElementById('preview-image').style.backgroundImage.includes('storyboard.jpg')"
        )
        assert await page.locator("#preview-time").text_content() == "0:11"
        position = await page.locator("#preview-image").evaluate("e => e.style.backgroundPosition")
        assert position == "-160px -90px"
        sprite = [r for r in wire.responses if "/storyboard.jpg" in r.url]
        assert sprite and all(r.status == 200 for r in sprite)
        if key:  # no header on images: the signature did it
            assert all("signature=" in r.url for r in wire.responses if "/poster.jpg" in r.url)
            assert all("signature=" in r.url for r in sprite)
        # A click there seeks the player.
        await page.mouse.click(box["x"] + box["width"] * 0.93, box["y"] + box["height"] / 2)
        await _until(page, "Math.abs(document.getElementById('player').currentTime - 11.16) < 0.3")
        assert wire.unexpected_errors() == []
        shot = tmp_path / "page-pictures.png"
        await page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] / 2)
        await page.screenshot(path=str(shot))
        _keep_screenshot(f"page-pictures-{'keys' if key else 'open'}.png", shot)
    assert "Traceback" not in server.log()
