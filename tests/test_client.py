"""The client commands (SPEC §9), run as a user runs them: `python -m videosvc ...` in a subprocess,
against the real server over HTTP. Faults are real: a killed process, a file size limit.
Hostile servers (SPEC §12) are real too, on loopback; the CLI runs in-process against them (below)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import resource
import sys
import unicodedata
from collections.abc import Awaitable, Callable, Mapping
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from tusclient.storage.filestorage import FileStorage

from videosvc.__main__ import main
from videosvc.client.api import UploadFingerprint

from .helpers import Client, Samples, get_video, poll_until, upload, wait_for_job

MB = 1024 * 1024
ID = "00000000-0000-4000-8000-000000000001"
OTHER_ID = "00000000-0000-4000-8000-000000000002"
#: The checkout these tests belong to. A subprocess runs from a temp folder, where `import videosvc`
#: would find the installed copy: an editable install can point to another checkout (a git worktree).
ROOT = Path(__file__).resolve().parent.parent


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for `python -m videosvc` in a subprocess: this checkout's videosvc first."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., Any]:
    """Runs `videosvc ARGS --url <server>`; resumable state lives in the test's own folder."""
    state = tmp_path / "state"

    async def run(
        client: Client | None, *args: str, env: dict[str, str] | None = None, preexec: Any = None
    ) -> Run:
        url = ["--url", str(client.make_url("")).rstrip("/")] if client is not None else []
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "videosvc", *args, *url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=tmp_path,
            env=cli_env(XDG_STATE_HOME=str(state), **(env or {})), preexec_fn=preexec,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 120)
        return Run(process.returncode or 0, out.decode(), err.decode())

    return run


async def test_upload_ls_info_download_and_rm(
    client: Client, cli: Any, samples: Samples, tmp_path: Path
) -> None:
    first, second = samples.video(320, 240), samples.video(160, 120)
    done = await cli(client, "upload", str(first), str(second), "--progress")
    assert done.code == 0, done.err
    ids = done.out.split()
    assert len(ids) == 2
    assert "100%" in done.err  # the progress bar, asked for on a non-terminal
    listed = await cli(client, "ls")
    assert listed.code == 0
    lines = listed.out.splitlines()
    assert lines[0].split()[:2] == ["ID", "NAME"]
    assert {line.split()[0] for line in lines[1:]} == set(ids)
    assert "320x240" in listed.out and first.name in listed.out
    assert {v["id"] for v in (await cli(client, "ls", "--json")).json()} == set(ids)
    assert [v["id"] for v in (await cli(client, "ls", "--json", "--limit", "1")).json()] == [ids[1]]  # newest

    shown = await cli(client, "info", ids[0])
    assert shown.code == 0 and f"name:      {first.name}" in shown.out and "320x240" in shown.out
    assert (await cli(client, "info", ids[0], "--json")).json() == await (
        await client.get(f"/file/{ids[0]}/")
    ).json()

    saved = await cli(client, "download", ids[0], "-o", str(tmp_path / "back.mp4"))
    assert saved.code == 0, saved.err
    assert (tmp_path / "back.mp4").read_bytes() == first.read_bytes()
    again = await cli(client, "download", ids[0], "-o", str(tmp_path / "back.mp4"))
    assert again.code == 1 and "--force" in again.err  # never overwrites by surprise

    removed = await cli(client, "rm", *ids)
    assert removed.code == 0, removed.err
    assert (await cli(client, "ls", "--json")).json() == []
    assert (await cli(client, "info", ids[0])).code == 3


async def test_upload_then_resize_and_wait(client: Client, cli: Any, samples: Samples) -> None:
    done = await cli(
        client, "upload", str(samples.video(320, 240)), "--resize", "160x120", "--wait", "--json"
    )
    assert done.code == 0, done.err
    [video] = done.json()
    assert (video["width"], video["height"], video["processingSuccess"]) == (160, 120, True)
    again = await cli(client, "resize", video["id"], "96x72", "--wait", "--progress")
    assert again.code == 0, again.err
    assert "resized to 96x72" in again.err and "resizing" in again.err  # the message and its bar
    assert (await get_video(client, video["id"]))["width"] == 96


async def test_a_killed_upload_resumes_where_it_stopped(
    client: Client, cli: Any, samples: Samples, data_dir: Path, tmp_path: Path
) -> None:
    source = samples.noisy(4)  # 23 MB, sent 1 MB at a time
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "videosvc", "upload", str(source), "--chunk-size", "1",
        "--url", str(client.make_url("")).rstrip("/"),
        env=cli_env(XDG_STATE_HOME=str(tmp_path / "state")),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    parts = data_dir / "uploads"
    await poll_until(
        lambda: any(p.stat().st_size >= 3 * MB for p in parts.glob("*.part")), "3 MB sent", 6, every_s=0.01
    )
    process.kill()  # SIGKILL: no chance to tidy up
    await process.wait()
    [part] = list(parts.glob("*.part"))
    kept = part.stat().st_size
    assert 3 * MB <= kept < source.stat().st_size

    resumed = await cli(client, "upload", str(source), "--chunk-size", "1")
    assert resumed.code == 0, resumed.err
    offset = int(resumed.err.split("resuming at ")[1].split()[0])
    assert offset >= kept  # from where the server was, not from 0
    video_id = resumed.out.strip()
    assert video_id == part.stem  # the same upload, finished
    assert (data_dir / "videos" / f"{video_id}.mp4").read_bytes() == source.read_bytes()
    assert len((await (await client.get("/file/")).json())["items"]) == 1

    fresh = await cli(client, "upload", str(source))  # done uploads are forgotten: a new one
    assert fresh.code == 0 and "resuming" not in fresh.err and fresh.out.strip() != video_id


def _limit_file_size(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


async def _bytes_out(client: Client) -> float:
    for line in (await (await client.get("/metrics")).text()).splitlines():
        if line.startswith('videosvc_video_bytes_total{direction="out"}'):
            return float(line.split()[-1])
    raise AssertionError("no videosvc_video_bytes_total")


async def test_a_cut_download_resumes_with_a_range_request(
    client: Client, cli: Any, samples: Samples, tmp_path: Path
) -> None:
    source = samples.noisy(2)
    video_id = await upload(client, source)
    target = tmp_path / "film.mp4"
    # The disk "fills" at 1 MB: a real write error, mid-download.
    cut = await cli(client, "download", video_id, "-o", str(target), preexec=_limit_file_size(MB))
    assert cut.code == 1 and "cannot write" in cut.err, cut.err
    assert len(cut.err.strip().splitlines()) == 1
    part = tmp_path / "film.mp4.part"
    assert part.stat().st_size == MB and not target.exists()

    before = await _bytes_out(client)
    done = await cli(client, "download", video_id, "-o", str(target))
    assert done.code == 0, done.err
    assert f"resuming at {MB} of {source.stat().st_size} bytes" in done.err
    assert target.read_bytes() == source.read_bytes()
    assert await _bytes_out(client) - before == source.stat().st_size - MB  # only the missing bytes
    assert not part.exists() and not (tmp_path / "film.mp4.part.etag").exists()


async def test_a_partial_download_of_an_older_version_starts_over(
    client: Client, cli: Any, samples: Samples, tmp_path: Path, data_dir: Path
) -> None:
    video_id = await upload(client, samples.noisy(2))
    target = tmp_path / "film.mp4"
    cut = await cli(client, "download", video_id, "-o", str(target), preexec=_limit_file_size(MB))
    assert cut.code == 1
    assert (await client.patch(f"/file/{video_id}/", json={"width": 320, "height": 180})).status == 200
    await wait_for_job(client, video_id)
    done = await cli(client, "download", video_id, "-o", str(target))
    assert done.code == 0, done.err
    assert "resuming" not in done.err  # If-Range: the partial bytes were of the old version
    assert target.read_bytes() == (data_dir / "videos" / f"{video_id}.mp4").read_bytes()


async def test_errors_are_one_line_with_documented_exit_codes(
    make_client: Any, cli: Any, samples: Samples, tmp_path: Path
) -> None:
    client = await make_client(api_keys=("k",))
    no_key = await cli(client, "ls")
    wrong = await cli(client, "ls", "--api-key", "nope")
    assert (no_key.code, wrong.code) == (4, 4)
    assert "API key" in wrong.err
    assert (await cli(client, "ls", env={"VIDEOSVC_API_KEY": "k"})).code == 0

    key = ("--api-key", "k")
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_text("not a video\n" * 100)
    refused = await cli(client, "upload", str(not_a_video), *key)
    assert refused.code == 1 and "not an MP4" in refused.err
    unknown = await cli(client, "info", "00000000-0000-4000-8000-000000000000", *key)
    assert unknown.code == 3 and "no video" in unknown.err
    bad_size = await cli(client, "resize", "00000000-0000-4000-8000-000000000000", "640by360", *key)
    assert bad_size.code == 2 and "640x360" in bad_size.err
    missing = await cli(client, "upload", str(tmp_path / "nowhere.mp4"), *key)
    assert missing.code == 1 and "no such file" in missing.err
    down = await cli(None, "ls", env={"VIDEOSVC_URL": "http://127.0.0.1:9"})  # the URL from the environment
    assert down.code == 5 and "cannot reach http://127.0.0.1:9" in down.err
    for run in (no_key, wrong, refused, unknown, bad_size, missing, down):
        assert len(run.err.strip().splitlines()) == 1, run.err
        assert run.err.startswith("videosvc: ") and "Traceback" not in run.err


async def test_a_failed_resize_exits_6(make_client: Any, cli: Any, samples: Samples) -> None:
    client = await make_client(x264_preset="veryslow", job_timeout_s=1)
    video_id = await upload(client, samples.video(1280, 720, duration_s=5))
    failed = await cli(client, "resize", video_id, "1920x1080", "--wait")
    assert failed.code == 6
    assert failed.err.strip().splitlines()[-1].startswith("videosvc: the resize failed: ")
    assert "timed out" in failed.err


async def test_a_server_error_exits_5(aiohttp_server: Any, cli: Any) -> None:
    async def down(request: web.Request) -> web.Response:
        return web.json_response({"error": "the database is down"}, status=503)

    app = web.Application()
    app.router.add_get("/file/", down)
    run = await cli(await aiohttp_server(app), "ls")
    assert run.code == 5 and "the database is down (HTTP 503)" in run.err, run


async def test_a_busy_upload_423_is_retried(aiohttp_server: Any, cli: Any, samples: Samples) -> None:
    """A tus server stand-in whose first PATCH finds the upload busy, as another connection can make it."""
    state = {"offset": 0, "patches": 0}
    tus = {"Tus-Resumable": "1.0.0"}

    async def create(request: web.Request) -> web.Response:
        return web.Response(status=201, headers={"Location": f"/uploads/{ID}", **tus})

    async def head(request: web.Request) -> web.Response:
        return web.Response(headers={"Upload-Offset": str(state["offset"]), **tus})

    async def patch(request: web.Request) -> web.Response:
        body = await request.read()
        state["patches"] += 1
        if state["patches"] == 1:
            return web.json_response({"error": "the upload is busy"}, status=423, headers=tus)
        state["offset"] += len(body)
        return web.Response(status=204, headers={"Upload-Offset": str(state["offset"]), **tus})

    app = web.Application()
    app.router.add_post("/uploads/", create)
    app.router.add_route("HEAD", f"/uploads/{ID}", head)
    app.router.add_patch(f"/uploads/{ID}", patch)
    source = samples.video(160, 120)
    run = await cli(await aiohttp_server(app), "upload", str(source))
    assert run.code == 0, run.err
    assert run.out.strip() == ID
    assert state == {"offset": source.stat().st_size, "patches": 2}


async def test_an_upload_is_never_resumed_on_another_server(
    make_client: Any, cli: Any, samples: Samples, tmp_path: Path
) -> None:
    first, second = await make_client(), await make_client(data_dir=str(tmp_path / "other"))
    source = samples.noisy(4)
    state = tmp_path / "state"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "videosvc", "upload", str(source), "--chunk-size", "1",
        "--url", str(first.make_url("")).rstrip("/"),
        env=cli_env(XDG_STATE_HOME=str(state)),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    state_file = state / "videosvc" / "uploads.json"
    await poll_until(
        lambda: state_file.exists() and "/uploads/" in state_file.read_text(),
        "the CLI to keep its upload's URL",
        10,
        every_s=0.01,
    )
    process.kill()
    await process.wait()
    assert "/uploads/" in state_file.read_text()  # an upload to the first server, left to resume
    other = await cli(second, "upload", str(source))
    assert other.code == 0, other.err
    assert "resuming" not in other.err
    assert [v["id"] for v in (await (await second.get("/file/")).json())["items"]] == [other.out.strip()]


# -- the CLI trusts no server (SPEC §12) ------------------------------------------------------------
# A hostile server is a real one on loopback that answers what each attack needs. The CLI runs in
# this process for these (in a thread: the servers share this event loop): an attack costs a few
# milliseconds there where a subprocess costs 0.7 s of imports, and a traceback still fails the test.

TUS = {"Tus-Resumable": "1.0.0"}
#: Where nothing listens: a server that is down.
DOWN = "http://127.0.0.1:9"
#: What must never reach a terminal from a server: controls (C0, C1, DEL), format characters
#: (bidi overrides, zero-width), lone surrogates, and line or paragraph separators.
UNPRINTABLE = {"Cc", "Cf", "Cs", "Zl", "Zp"}


@dataclass(frozen=True)
class Raw:
    """An answer as it is sent: a body that need not be JSON, its status, its headers."""

    body: bytes = b""
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class InTurn:
    """Answers given one after the other; the last one again once they have all been given."""

    answers: tuple[Any, ...]


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class Hostile:
    url: str
    #: Every request it got, in order.
    seen: list[Seen]


Answers = Mapping[str, Any]


@pytest.fixture
def hostile(aiohttp_server: Any) -> Callable[[Answers], Awaitable[Hostile]]:
    """Starts a server on loopback that answers "METHOD /path?query" with `answers[...]`: a JSON
    value (status 200), a Raw or an InTurn; 404 to anything else. It keeps every request it got."""

    async def start(answers: Answers) -> Hostile:
        seen: list[Seen] = []
        turns: dict[str, int] = {}

        async def answer(request: web.Request) -> web.Response:
            key = f"{request.method} {request.path_qs}"
            seen.append(Seen(request.method, request.path_qs, dict(request.headers), await request.read()))
            value = answers.get(key, Raw(b'{"error": "nothing here"}', 404))
            if isinstance(value, InTurn):
                turns[key] = turns.get(key, -1) + 1
                value = value.answers[min(turns[key], len(value.answers) - 1)]
            if isinstance(value, Raw):
                return web.Response(body=value.body, status=value.status, headers=value.headers)
            return web.json_response(value)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", answer)
        server = await aiohttp_server(app)
        return Hostile(str(server.make_url("")).rstrip("/"), seen)

    return start


@pytest.fixture
def cli_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Awaitable[Run]]:
    """Runs `videosvc ARGS` as `python -m videosvc` does, but in this process, from an empty folder
    (`tmp_path / "here"`), with resumable state in `tmp_path / "state"`. One run at a time: stdout
    and stderr are the process's own."""
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    for name in ("VIDEOSVC_URL", "VIDEOSVC_API_KEY"):
        monkeypatch.delenv(name, raising=False)

    def call(args: tuple[str, ...]) -> Run:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as e:  # argparse's own usage errors
                code = e.code if isinstance(e.code, int) else 1
        return Run(code, out.getvalue(), err.getvalue())

    async def run(*args: str) -> Run:
        return await asyncio.to_thread(call, args)

    return run


#: In video(): leave this field out.
GONE = object()


def video(video_id: str = ID, **fields: Any) -> dict[str, Any]:
    """A well-formed GET /file/{id}/ answer, as the real server writes it, with `fields` changed."""
    shape = {
        "id": video_id, "filename": "cat.mp4", "processing": False, "processingSuccess": None,
        "processingError": None, "progress": None, "size": 1000, "width": 320, "height": 240,
        "duration": 1.0, "createdAt": "2025-01-01T00:00:00Z", "updatedAt": "2025-01-01T00:00:00Z",
        "originalWidth": None, "originalHeight": None, "originalSize": None,
        "contentUrl": f"/file/{video_id}/content", "eventsUrl": f"/file/{video_id}/events", "job": None,
    } | fields  # fmt: skip
    return {name: value for name, value in shape.items() if value is not GONE}


def failed_job(error: str) -> dict[str, Any]:
    return {"state": "failed", "width": 16, "height": 16, "progress": None, "error": error,
            "queuedAt": None, "startedAt": None, "finishedAt": None}  # fmt: skip


def events(*data: str) -> Raw:
    """A live stream (GET /file/{id}/events) that sends these `video` events, then ends."""
    return Raw("".join(f"event: video\ndata: {d}\n\n" for d in data).encode(),
               headers={"Content-Type": "text/event-stream"})  # fmt: skip


def fails(run: Run, code: int) -> bool:
    """Whether `run` ended as the CLI must end: one line on stderr, nothing on stdout, `code`."""
    return (run.code, run.out) == (code, "") and run.err.startswith("videosvc: ") and run.err.count("\n") == 1


def clip(tmp_path: Path, size: int = 1000) -> Path:
    """A file to upload to a server that does not look at it."""
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"\0" * size)
    return path


def keep_upload_url(tmp_path: Path, server: str, source: Path, url: str | None = None) -> str | None:
    """The tus URL kept in the state for `source` on `server`: sets it first, when `url` is given,
    as an earlier run cut off mid-upload would have left it."""
    storage = FileStorage(str(tmp_path / "state" / "videosvc" / "uploads.json"))
    try:
        with source.open("rb") as f:
            key = UploadFingerprint(server).get_fingerprint(f)
        if url is not None:
            storage.set_item(key, url)
        kept: str | None = storage.get_item(key)
        return kept
    finally:
        storage.close()


async def test_download_never_saves_under_a_name_that_hides_or_climbs(
    hostile: Any, cli_here: Any, tmp_path: Path
) -> None:
    long = "x" * 300 + ".mp4"
    names = {  # the server's filename → the name the CLI saves the video under
        ".bash_profile": "bash_profile",
        " . .profile": "profile",
        "...": "{id}.mp4",
        "": "{id}.mp4",
        "a/b\\c.mp4": "a_b_c.mp4",
        "../../evil.mp4": "_.._evil.mp4",
        "a\u0000b.mp4": "a_b.mp4",
        "\u202egpj.mp4": "_gpj.mp4",
        "\x1b[31mred\x9b.mp4": "_[31mred_.mp4",
        long: "x" * (200 - len(".mp4")) + ".mp4",  # a name the file system can hold, .part and all
    }
    ids = {name: f"00000000-0000-4000-8000-{i:012d}" for i, name in enumerate(names)}
    answers: dict[str, Any] = {}
    for name, video_id in ids.items():
        answers[f"GET /file/{video_id}/"] = video(video_id, filename=name)
        answers[f"GET /file/{video_id}/content"] = Raw(video_id.encode())
    server = await hostile(answers)
    here = tmp_path / "here"
    for name, video_id in ids.items():
        saved = await cli_here("download", video_id, "--url", server.url)
        expected = names[name].format(id=video_id)
        assert saved.code == 0 and (here / expected).read_bytes() == video_id.encode(), (name, saved)
    assert sorted(os.listdir(here)) == sorted(n.format(id=ids[k]) for k, n in names.items())
    assert not (tmp_path / "evil.mp4").exists() and not (tmp_path.parent / "evil.mp4").exists()

    (here / "into").mkdir()  # -o FOLDER: the server's name, made safe, in it
    assert (await cli_here("download", ids[".bash_profile"], "-o", "into", "--url", server.url)).code == 0
    assert os.listdir(here / "into") == ["bash_profile"]
    mine = await cli_here("download", ids[".bash_profile"], "-o", ".mine", "--url", server.url)
    assert mine.code == 0 and (here / ".mine").exists()  # -o PATH is the user's own choice, as given


CLIP = "{clip}"  # in a command: the file to upload (clip())
CREATED = Raw(status=201, headers={"Location": f"/uploads/{ID}", **TUS})
OFFSET = {n: Raw(status=204, headers={"Upload-Offset": str(n), **TUS}) for n in (0, 1000, 1001)}
WAIT, RESIZED, EVENTS = ["resize", ID, "16x16", "--wait"], f"PATCH /file/{ID}/", f"GET /file/{ID}/events"
MALFORMED: dict[str, tuple[list[str], Answers]] = {  # a case → the command, the server's answers
    "name-int": (["info", ID], {f"GET /file/{ID}/": video(filename=7)}),
    "name-null": (["info", ID], {f"GET /file/{ID}/": video(filename=None)}),
    "name-list": (["info", ID], {f"GET /file/{ID}/": video(filename=["a"])}),
    "html": (["info", ID], {f"GET /file/{ID}/": Raw(b"<html>maintenance</html>")}),
    "array": (["info", ID], {f"GET /file/{ID}/": [video()]}),
    "missing": (["info", ID], {f"GET /file/{ID}/": {"id": ID}}),
    "job": (["info", ID], {f"GET /file/{ID}/": video(job="failed")}),
    "job-fields": (["info", ID], {f"GET /file/{ID}/": video(job={"state": "failed"})}),
    "original": (["info", ID], {f"GET /file/{ID}/": video(originalWidth=320, originalHeight=GONE)}),
    "nan": (["info", ID], {f"GET /file/{ID}/": video(duration=float("nan"))}),  # json.dumps writes NaN
    "id": (["info", ID], {f"GET /file/{ID}/": video(id="../../x")}),
    "loop": (["info", ID], {f"GET /file/{ID}/": Raw(status=302, headers={"Location": "./"})}),
    "deep": (["info", ID], {f"GET /file/{ID}/": Raw(b"[" * 100_000)}),
    "ls-item": (["ls"], {"GET /file/?limit=50": {"items": [video(size="big")], "next": None}}),
    "ls-next": (["ls"], {"GET /file/?limit=50": {"items": [], "next": 5}}),
    "ls-null": (["ls"], {"GET /file/?limit=50": None}),
    "download": (["download", ID], {f"GET /file/{ID}/": video(filename=None)}),
    "wait-text": (WAIT, {RESIZED: {}, EVENTS: events("{")}),
    "wait-shape": (WAIT, {RESIZED: {}, EVENTS: events(json.dumps(video(processing="no")))}),
    "rm-prefix": (["rm", "abcd"], {"GET /file/?limit=100": {"items": 5, "next": None}}),
    "no-location": (["upload", CLIP], {"POST /uploads/": Raw(status=201)}),
    "no-offset": (["upload", CLIP], {"POST /uploads/": CREATED, f"PATCH /uploads/{ID}": Raw(status=204)}),
    "past-end": (["upload", CLIP], {"POST /uploads/": CREATED, f"PATCH /uploads/{ID}": OFFSET[1001]}),
    "upload-id": (["upload", CLIP], {"POST /uploads/": Raw(status=201, headers={"Location": "/uploads/x"}),
                                     "PATCH /uploads/x": OFFSET[1000]}),
    # The same offset again and again: the same bytes, forever. (The last answer ends a client that
    # does not check, so that the test fails instead of hanging.)
    "stuck": (["upload", CLIP], {"POST /uploads/": CREATED,
                                 f"PATCH /uploads/{ID}": InTurn((OFFSET[0],) * 3 + (OFFSET[1000],))}),
}  # fmt: skip


@pytest.mark.parametrize("case", MALFORMED)
async def test_a_malformed_answer_is_one_line_and_exit_5(
    case: str, hostile: Any, cli_here: Any, tmp_path: Path
) -> None:
    args, answers = MALFORMED[case]
    server = await hostile(answers)
    run = await cli_here(*(arg.format(clip=clip(tmp_path)) for arg in args), "--url", server.url)
    assert fails(run, 5) and "malformed" in run.err, run
    assert len([s for s in server.seen if s.method == "PATCH"]) <= 1  # it stops at the first one


async def test_an_error_that_is_not_json_still_says_its_status(hostile: Any, cli_here: Any) -> None:
    server = await hostile({f"GET /file/{ID}/": Raw(b"[" * 100_000, 404)})
    gone = await cli_here("info", ID, "--url", server.url)
    assert fails(gone, 3) and "404" in gone.err, gone


async def test_an_upload_goes_to_no_host_but_the_urls(hostile: Any, cli_here: Any, tmp_path: Path) -> None:
    elsewhere = await hostile({})  # another listener: anything it gets has leaked
    away = Raw(status=201, headers={"Location": f"{elsewhere.url}/up/x", **TUS})
    server = await hostile({"POST /uploads/": away})
    source = clip(tmp_path)
    sent = await cli_here("upload", str(source), "--url", server.url, "--api-key", "secret")
    assert fails(sent, 5) and f"{elsewhere.url}/up/x" in sent.err, sent
    assert server.seen[0].headers["Authorization"] == "Bearer secret"  # the key was in play
    assert elsewhere.seen == []

    # A tus URL kept by an earlier run is checked as well, before it is asked for its offset (HEAD).
    keep_upload_url(tmp_path, server.url, source, f"{elsewhere.url}/up/y")
    resumed = await cli_here("upload", str(source), "--url", server.url, "--api-key", "secret")
    assert fails(resumed, 5) and f"{elsewhere.url}/up/y" in resumed.err, resumed
    assert elsewhere.seen == []
    assert keep_upload_url(tmp_path, server.url, source) is None  # forgotten: the next run starts afresh


async def test_a_redirect_to_another_host_gets_no_api_key(
    hostile: Any, cli_here: Any, tmp_path: Path
) -> None:
    """requests drops Authorization when a redirect leaves the origin, tuspy's PATCH included: this
    keeps it so (a regression test; it passed before the CLI's own guards too)."""
    elsewhere = await hostile({f"GET /file/{ID}/": video()})
    server = await hostile({
        f"GET /file/{ID}/": Raw(status=302, headers={"Location": f"{elsewhere.url}/file/{ID}/"}),
        "POST /uploads/": CREATED,
        f"PATCH /uploads/{ID}": Raw(status=307, headers={"Location": f"{elsewhere.url}/uploads/{ID}"}),
    })  # fmt: skip
    await cli_here("info", ID, "--url", server.url, "--api-key", "secret")
    await cli_here("upload", str(clip(tmp_path)), "--url", server.url, "--api-key", "secret")
    assert [s.method for s in elsewhere.seen] == ["GET", "PATCH"]
    assert [s for s in elsewhere.seen if "Authorization" in s.headers] == []


async def test_server_text_is_printed_without_terminal_controls(hostile: Any, cli_here: Any) -> None:
    evil = "\x1b[31mred\x1b]0;owned\x07\u202egpj.mp4\x9b2J\x7f\u2028\ud800end"
    shown = video(filename=evil, job=failed_job(evil), processingSuccess=False, processingError=evil)
    server = await hostile({
        "GET /file/?limit=50": {"items": [shown], "next": None},
        f"GET /file/{ID}/": shown,
        f"GET /file/{OTHER_ID}/": Raw(json.dumps({"error": evil}).encode(), 404),
        f"PATCH /file/{ID}/": {},
        f"GET /file/{ID}/events": events(json.dumps(shown)),
    })  # fmt: skip
    runs = {
        "ls": (0, await cli_here("ls", "--url", server.url)),
        "info": (0, await cli_here("info", ID, "--url", server.url)),
        "an error": (3, await cli_here("info", OTHER_ID, "--url", server.url)),
        "a failed resize": (6, await cli_here("resize", ID, "16x16", "--wait", "--url", server.url)),
    }
    for what, (code, run) in runs.items():
        text = run.out + run.err
        assert run.code == code and "red" in text and "end" in text, (what, run)
        assert not [c for c in text if c != "\n" and unicodedata.category(c) in UNPRINTABLE], (what, run)
    listed = await cli_here("ls", "--json", "--url", server.url)
    assert listed.out.isascii() and listed.out.replace("\n", "").isprintable(), listed.out  # all \u-escaped
    assert json.loads(listed.out)[0]["filename"] == evil  # and nothing lost


async def test_the_url_forms_a_user_types(client: Client, cli_here: Any) -> None:
    port = client.port
    forms = ("127.0.0.1:{}", "localhost:{}", "http://127.0.0.1:{}/file/", "http://127.0.0.1:{}/file",
             "127.0.0.1:{}/uploads/", " http://127.0.0.1:{}/ ")  # fmt: skip
    for url in (form.format(port) for form in forms):
        run = await cli_here("ls", "--json", "--url", url)
        assert (run.code, run.out.strip()) == (0, "[]"), (url, run)
    for url in ("ftp://127.0.0.1", "http://", "http://127.0.0.1:99999", "http://[::1", "http://h/?a=1"):
        assert fails(await cli_here("ls", "--url", url), 2), url


async def test_an_upload_to_a_server_that_is_down_cannot_reach_it(cli_here: Any, tmp_path: Path) -> None:
    source = clip(tmp_path)
    fresh = await cli_here("upload", str(source), "--url", DOWN)
    assert fails(fresh, 5) and f"cannot reach {DOWN}: " in fresh.err, fresh
    keep_upload_url(tmp_path, DOWN, source, f"{DOWN}/uploads/abc")  # an upload to resume: asks its offset
    resumed = await cli_here("upload", str(source), "--url", DOWN)
    assert fails(resumed, 5) and f"cannot reach {DOWN}: " in resumed.err, resumed
    assert keep_upload_url(tmp_path, DOWN, source) == f"{DOWN}/uploads/abc"  # kept, for when it is back


async def test_an_id_prefix_names_the_one_video_whose_id_starts_with_it(hostile: Any, cli_here: Any) -> None:
    first = [f"abcd{i}000-0000-4000-8000-000000000000" for i in range(4)]
    last = "abcef000-0000-4000-8000-000000000000"
    server = await hostile({
        "GET /file/?limit=100": {"items": [video(i) for i in first], "next": "page2"},
        "GET /file/?limit=100&cursor=page2": {"items": [video(last)], "next": None},
        f"GET /file/{last}/": video(last, filename="found.mp4"),
        f"DELETE /file/{last}/": Raw(status=204),
    })  # fmt: skip
    found = await cli_here("info", "ABCE", "--url", server.url)  # on the second page; any case
    assert found.code == 0 and "found.mp4" in found.out, found
    assert (await cli_here("rm", "abce", "--url", server.url)).code == 0
    assert server.seen[-1].method == "DELETE" and last in server.seen[-1].path
    ambiguous = await cli_here("info", "abcd", "--url", server.url)
    assert fails(ambiguous, 2) and "ambiguous" in ambiguous.err and ", ..." in ambiguous.err
    assert all(i in ambiguous.err for i in first[:3]), ambiguous
    none = await cli_here("download", "abcd9", "--url", server.url)
    assert fails(none, 3) and "no video with id starting with abcd9" in none.err, none
    for bad in ("abc", "ab-c", "abcx", "../x"):
        assert fails(await cli_here("resize", bad, "16x16", "--url", server.url), 2), bad


async def test_the_commands_take_a_unique_id_prefix(client: Client, cli_here: Any, samples: Samples) -> None:
    video_id = await upload(client, samples.video(160, 120))
    short, url = video_id[:8], str(client.make_url("")).rstrip("/")
    assert (await cli_here("info", short, "--url", url)).code == 0
    assert (await cli_here("download", short, "-o", "back.mp4", "--url", url)).code == 0
    assert (resized := await cli_here("resize", short, "96x72", "--url", url)).code == 0, resized
    assert f"{video_id}: resize to 96x72 queued" in resized.err  # the whole id, once found
    await wait_for_job(client, video_id)
    assert (await cli_here("rm", short, "--url", url)).code == 0
    assert fails(gone := await cli_here("info", short, "--url", url), 3), gone


async def test_info_lists_the_hls_renditions_and_the_playback_url(
    make_client: Any, cli: Any, samples: Samples
) -> None:
    from .test_hls import HLS, h264_aac, wait_ready

    client = await make_client(**HLS, max_job_pixel_frames=100_000)  # the copy plays; the ladder is refused
    video_id = await upload(client, h264_aac(samples, 640, 360, 2.0))
    await poll_until(
        lambda: get_video(client, video_id),
        "the ladder to fail",
        until=lambda b: b["renditions"][-1]["state"] == "failed",
    )
    await wait_ready(client, video_id, 1)
    shown = await cli(client, "info", video_id)
    assert shown.code == 0, shown.err
    lines = shown.out.splitlines()
    assert f"playback:  {str(client.make_url('')).rstrip('/')}/file/{video_id}/hls/master.m3u8" in lines
    renditions = [line for line in lines if line.startswith("rendition:")]
    assert renditions[0].startswith("rendition: 640x360 ready, ") and renditions[0].endswith(" Mb/s peak")
    assert renditions[1].startswith("rendition: 426x240 failed: the ladder is ")
    assert "max_job_pixel_frames" in renditions[2]


async def test_thumbnail_saves_the_frame_at_a_time_and_info_lists_the_pictures(
    make_client: Any, cli: Any, samples: Samples, tmp_path: Path, tools: Any
) -> None:
    from .test_pictures import black_then_pattern, clock, luma, size_of, wait_pictures

    client = await make_client(pictures_enabled=True)
    video_id = await upload(client, clock(samples))
    shot = await cli(client, "thumbnail", video_id[:8], "--time", "3", "--width", "64", "-o", "at3.jpg")
    assert shot.code == 0, shot.err
    assert size_of(tools, tmp_path / "at3.jpg") == (64, 48)
    assert abs(luma(tools, tmp_path / "at3.jpg")[0] - (16 + 50 * 3)) <= 4  # the clock clip shows 3 s
    webp = await cli(client, "thumbnail", video_id, "--time", "1", "-o", "at1.webp", "--json")
    assert webp.code == 0 and webp.json()["format"] == "webp", webp.err
    assert (tmp_path / "at1.webp").read_bytes()[8:12] == b"WEBP"
    again = await cli(client, "thumbnail", video_id, "-o", "at3.jpg")
    assert fails(again, 1) and "exists" in again.err  # never overwritten unasked
    late = await cli(client, "thumbnail", video_id, "--time", "99", "-o", "late.jpg")
    assert fails(late, 1) and "duration" in late.err and not (tmp_path / "late.jpg").exists()

    poster_id = await upload(client, black_then_pattern(samples))
    await wait_pictures(client, poster_id)
    lines = (await cli(client, "info", poster_id)).out.splitlines()
    base = str(client.make_url("")).rstrip("/")
    assert f"poster:    {base}/file/{poster_id}/poster.jpg" in lines
    assert f"storyboard: {base}/file/{poster_id}/storyboard.vtt" in lines
