"""The client commands of `videosvc`: upload, ls, info, resize, download, rm, against a server's URL.

Results go to stdout (ids, tables, or JSON with --json); progress and messages
to stderr, so `ID=$(videosvc upload cat.mp4)` works. Exit codes:

    0  done
    1  the server refused the request (the message says why), or a local file problem
    2  bad arguments (a --url that cannot be one, an id prefix that names several videos)
    3  no such video (no id starts with the prefix)
    4  missing or wrong API key
    5  the server could not be reached, or failed, or answered what the API does not
    6  the resize failed (with --wait)
    130  interrupted (Ctrl-C): run the same upload or download again to resume it

A video is named by its id, or by the start of it (at least 4 hex digits) when only one id
starts so, as git names commits.

It trusts no server (SPEC §12): whatever a server sends is printed without terminal controls
(text.printable), a name it chose is saved only as a plain name in the current folder
(text.file_name), and a malformed answer ends the command like any other error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .api import ApiError, BadUrl, Client, Unreachable
from .shapes import Malformed, is_uuid
from .text import file_name, printable

OK, REFUSED, USAGE, NOT_FOUND, AUTH, UNREACHABLE, JOB_FAILED, INTERRUPTED = 0, 1, 2, 3, 4, 5, 6, 130
DEFAULT_URL = "http://127.0.0.1:8080"
COMMANDS = ("upload", "ls", "info", "resize", "download", "thumbnail", "rm")
SIZE = re.compile(r"^(\d+)[xX\N{MULTIPLICATION SIGN}](\d+)$")
#: The start of an id: hex digits and the dashes between them.
ID_PREFIX = re.compile(r"[0-9a-f-]+")
#: Fewer hex digits than this would name too many videos to be of use.
MIN_PREFIX_DIGITS = 4
#: How many of the ids an ambiguous prefix names are shown.
SHOWN_IDS = 3


class Failure(Exception):
    """Ends a command with one line on stderr and an exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def add_commands(commands: Any) -> None:
    """Adds the client commands to the `videosvc` parser's subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=os.environ.get("VIDEOSVC_URL", DEFAULT_URL),
                        help=f"the server (default: $VIDEOSVC_URL, else {DEFAULT_URL})")  # fmt: skip
    common.add_argument("--api-key", default=os.environ.get("VIDEOSVC_API_KEY"),
                        help="a key, when the server has api_keys (default: $VIDEOSVC_API_KEY)")  # fmt: skip
    common.add_argument("--json", action="store_true", help="print JSON (the API's own shapes)")
    common.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bars on stderr (default: when it is a terminal)")  # fmt: skip

    upload = commands.add_parser("upload", parents=[common], help="upload videos (run again to resume)")
    upload.add_argument("files", nargs="+", type=Path, metavar="FILE")
    upload.add_argument("--resize", metavar="WxH", help="then resize each, e.g. 640x360")
    upload.add_argument("--wait", action="store_true", help="with --resize: wait until each resize ends")
    upload.add_argument("--chunk-size", type=float, default=8.0, metavar="MB",
                        help="bytes per request (default 8 MB); a drop costs at most one")  # fmt: skip

    ls = commands.add_parser("ls", parents=[common], help="list videos, newest first")
    ls.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    ls.add_argument("--all", action="store_true", help="every video, page after page")

    info = commands.add_parser("info", parents=[common], help="describe a video and its last resize")
    info.add_argument("id")

    resize = commands.add_parser("resize", parents=[common], help="resize a video, e.g. resize ID 640x360")
    resize.add_argument("id")
    resize.add_argument("size", metavar="WxH")
    resize.add_argument("--wait", action="store_true", help="wait until the resize ends")

    download = commands.add_parser("download", parents=[common], help="save a video (resumes a partial one)")
    download.add_argument("id")
    download.add_argument("-o", "--output", type=Path, help="where (default: its filename, here)")
    download.add_argument("--original", action="store_true", help="the upload as it came, not resized")
    download.add_argument("--force", action="store_true", help="overwrite an existing file")

    _add_thumbnail(commands, common)

    rm = commands.add_parser("rm", parents=[common], help="delete videos")
    rm.add_argument("ids", nargs="+", metavar="ID")


def _add_thumbnail(commands: Any, common: argparse.ArgumentParser) -> None:
    thumbnail = commands.add_parser(
        "thumbnail", parents=[common], help="save the frame at a time as a picture (JPEG, or WebP for .webp)"
    )
    thumbnail.add_argument("id")
    thumbnail.add_argument(
        "--time", type=float, metavar="S", help="seconds into the video (default: the poster's)"
    )
    thumbnail.add_argument("--width", type=int, metavar="W", help="16 to 1920, rounded to 16 (default 320)")
    thumbnail.add_argument(
        "-o", "--output", type=Path, required=True, metavar="FILE", help="where (.jpg or .webp)"
    )
    thumbnail.add_argument("--force", action="store_true", help="overwrite an existing file")


def run(args: argparse.Namespace) -> int:
    try:
        client = Client(args.url, args.api_key)
    except BadUrl as e:
        return _fail(USAGE, str(e))
    handler: Callable[[Client, argparse.Namespace], int] = HANDLERS[args.command]
    try:
        with client:
            return handler(client, args)
    except Failure as e:
        return _fail(e.code, str(e))
    except ApiError as e:
        return _fail(_code_for(e.status), f"{e} (HTTP {e.status})")
    except Unreachable as e:
        return _fail(UNREACHABLE, str(e))
    except Malformed as e:
        return _fail(UNREACHABLE, f"{client.url} sent a malformed answer: {e}")
    except KeyboardInterrupt:
        return _fail(INTERRUPTED, "interrupted; run the same command again to resume")


def _code_for(status: int) -> int:
    if status == 404:
        return NOT_FOUND
    if status in (401, 403):
        return AUTH
    return UNREACHABLE if status >= 500 else REFUSED


# Every line printed goes through printable(): most lines carry a server's text (a name, an error).


def _fail(code: int, message: str) -> int:
    print(printable(f"videosvc: {message}"), file=sys.stderr)
    return code


def _say(message: str) -> None:
    print(printable(message), file=sys.stderr, flush=True)


def _out(line: str) -> None:
    print(printable(line))


def _size(text: str) -> tuple[int, int]:
    match = SIZE.match(text.strip())
    if not match:
        raise Failure(USAGE, f"the size must look like 640x360, not {text!r}")
    return int(match[1]), int(match[2])


@contextmanager
def _bar(args: argparse.Namespace, total: int, initial: int = 0, desc: str = "") -> Iterator[tqdm[Any]]:
    disable = None if args.progress is None else not args.progress  # None: only on a terminal
    # Asked for (a log, a CI job): every update is drawn, the last one (100%) too.
    interval = 0.0 if args.progress else 0.1
    with tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
              disable=disable, file=sys.stderr, dynamic_ncols=True, leave=False,
              mininterval=interval) as bar:  # fmt: skip
        yield bar


def _print_json(value: Any) -> None:
    # ensure_ascii escapes every character outside printable ASCII (controls, DEL, C1, bidi) as \uXXXX:
    # the output is a server's text, and a terminal may be showing it.
    print(json.dumps(value, indent=2, ensure_ascii=True))


def _state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "videosvc"


# -- commands ------------------------------------------------------------------------------------


def upload(client: Client, args: argparse.Namespace) -> int:
    size = _size(args.resize) if args.resize else None
    if args.wait and not size:
        raise Failure(USAGE, "--wait needs --resize WxH")
    missing = [str(path) for path in args.files if not path.is_file()]
    if missing:
        raise Failure(REFUSED, f"no such file: {', '.join(missing)}")
    ids: list[str] = []
    for path in args.files:
        total = path.stat().st_size
        with _bar(args, total, desc=path.name) as bar:

            def started(offset: int, bar: tqdm[Any] = bar, path: Path = path, total: int = total) -> None:
                if offset:
                    _say(f"{path.name}: resuming at {offset} of {total} bytes")
                    bar.update(offset)

            video_id = client.upload(
                path, int(args.chunk_size * 1024**2), _state_dir() / "uploads.json", started, bar.update
            )
        _say(f"{path.name}: stored as {video_id}")
        if size:
            client.resize(video_id, *size)
            if args.wait:
                info = _wait(client, args, video_id)
                if not info["processingSuccess"]:
                    raise Failure(JOB_FAILED, f"{path.name}: the resize failed: {info['processingError']}")
        ids.append(video_id)
    if args.json:
        _print_json([client.info(video_id) for video_id in ids])
    else:
        for video_id in ids:
            _out(video_id)
    return OK


def ls(client: Client, args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise Failure(USAGE, "--limit must be at least 1")
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        want = 100 if args.all else min(100, args.limit - len(items))
        page = client.page(want, cursor)
        items.extend(page.items)
        cursor = page.next
        if not cursor or (not args.all and len(items) >= args.limit):
            break
    if args.json:
        _print_json(items)
        return OK
    rows = [("ID", "NAME", "SIZE", "DIMENSIONS", "DURATION", "STATUS")]
    rows += [
        (v["id"], v["filename"], _human(v["size"]), f"{v['width']}x{v['height']}", _duration(v["duration"]),
         _status(v))
        for v in items
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        _out("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    if cursor and not args.all:
        _say("(more videos: --limit N or --all)")
    return OK


def info(client: Client, args: argparse.Namespace) -> int:
    video = client.info(_resolve(client, args.id))
    if args.json:
        _print_json(video)
        return OK
    lines = [
        ("id", video["id"]),
        ("name", video["filename"]),
        (
            "size",
            f"{video['width']}x{video['height']}, {_duration(video['duration'])}, {_human(video['size'])}",
        ),
    ]
    if video["originalWidth"]:
        original = f"{video['originalWidth']}x{video['originalHeight']}, {_human(video['originalSize'])}"
        lines.append(("original", original))
    lines += [
        ("status", _status(video)),
        ("created", video["createdAt"]),
        ("content", client.url + video["contentUrl"]),
    ]
    if video.get("playbackUrl"):
        lines.append(("playback", client.url + printable(video["playbackUrl"])))
    if video.get("posterUrl"):
        lines.append(("poster", client.url + printable(video["posterUrl"])))
        lines.append(("storyboard", client.url + printable(video["storyboardUrl"])))
    elif (video.get("pictures") or {}).get("state") == "failed":
        lines.append(("pictures", f"failed: {printable(video['pictures']['error'] or '')}"))
    lines += [("rendition", _rendition(r)) for r in video.get("renditions", [])]
    for name, value in lines:
        _out(f"{name + ':':<10} {value}")
    return OK


def _rendition(rendition: dict[str, Any]) -> str:
    """`640x360 ready, 1.9 Mb/s peak`, or its state (and why it failed)."""
    text = f"{rendition['width']}x{rendition['height']} {printable(rendition['state'])}"
    if rendition["bandwidth"]:
        text += f", {rendition['bandwidth'] / 1e6:.1f} Mb/s peak"
    if rendition["error"]:
        text += f": {printable(rendition['error'])}"
    return text


def resize(client: Client, args: argparse.Namespace) -> int:
    width, height = _size(args.size)
    video_id = _resolve(client, args.id)
    client.resize(video_id, width, height)
    if not args.wait:
        _say(f"{video_id}: resize to {width}x{height} queued")
        if args.json:
            _print_json(client.info(video_id))
        return OK
    video = _wait(client, args, video_id)
    if args.json:
        _print_json(video)
    if not video["processingSuccess"]:
        raise Failure(JOB_FAILED, f"the resize failed: {video['processingError']}")
    _say(f"{video_id}: resized to {video['width']}x{video['height']}")
    return OK


def _wait(client: Client, args: argparse.Namespace, video_id: str) -> dict[str, Any]:
    """Follows the video's live events until its job ends; a bar shows the progress."""
    disable = None if args.progress is None else not args.progress
    with tqdm(total=100, desc="resizing", unit="%", disable=disable, file=sys.stderr, leave=False) as bar:
        for video in client.follow(video_id):
            if video["processing"]:
                bar.update((video["progress"] or 0) - bar.n)
            elif video["job"]:
                bar.update(100 - bar.n)
                return video
    raise Failure(NOT_FOUND, f"{video_id} was deleted while it was being resized")


def download(client: Client, args: argparse.Namespace) -> int:
    video_id = _resolve(client, args.id)
    video = client.info(video_id)
    # The server's name for it, never a hidden file or a path; -o PATH is the user's, and used as given.
    name = file_name(video["filename"], fallback=f"{video_id}.mp4")
    target: Path = args.output or Path(name)
    if target.is_dir():
        target = target / name
    if target.exists() and not args.force:
        raise Failure(REFUSED, f"{target} exists (use --force to overwrite, or -o PATH)")
    part = target.with_name(target.name + ".part")
    etag_file = target.with_name(target.name + ".part.etag")
    offset = part.stat().st_size if part.exists() else 0
    etag = etag_file.read_text().strip() if offset and etag_file.exists() else None
    try:
        with part.open("ab+") as out, _bar(args, total=0, desc=target.name) as bar:

            def started(start: int, total: int, new_etag: str | None) -> None:
                if start:
                    _say(f"{target.name}: resuming at {start} of {total} bytes")
                if new_etag:  # kept beside the partial file, for If-Range next time
                    etag_file.write_text(new_etag)
                bar.reset(total=total)
                bar.update(start)

            client.download(video_id, out, offset, etag, args.original, started, bar.update)
    except OSError as e:
        raise Failure(REFUSED, f"cannot write {part}: {e.strerror or e}") from None
    part.replace(target)
    etag_file.unlink(missing_ok=True)
    _say(f"saved {target}")
    if args.json:
        _print_json({"id": video_id, "path": str(target), "size": target.stat().st_size})
    return OK


def thumbnail(client: Client, args: argparse.Namespace) -> int:
    target: Path = args.output
    fmt = "webp" if target.suffix.lower() == ".webp" else "jpg"
    if target.exists() and not args.force:
        raise Failure(REFUSED, f"{target} exists (use --force to overwrite)")
    video_id = _resolve(client, args.id)
    data = client.thumbnail(video_id, fmt, args.time, args.width)
    part = target.with_name(target.name + ".part")
    try:
        part.write_bytes(data)
        part.replace(target)
    except OSError as e:
        raise Failure(REFUSED, f"cannot write {target}: {e.strerror or e}") from None
    _say(f"saved {target}")
    if args.json:
        _print_json({"id": video_id, "path": str(target), "size": len(data), "format": fmt})
    return OK


def rm(client: Client, args: argparse.Namespace) -> int:
    ids = [_resolve(client, text) for text in args.ids]  # all of them, before deleting any
    missing = []
    for video_id in ids:
        try:
            client.delete(video_id)
            _say(f"{video_id}: deleted")
        except ApiError as e:
            if e.status != 404:
                raise
            missing.append(video_id)
    if missing:
        raise Failure(NOT_FOUND, f"no such video: {', '.join(missing)}")
    return OK


def _resolve(client: Client, text: str) -> str:
    """The id `text` names: a whole id as it is, else the one id that starts with it (as git takes
    a commit's first hex digits), found by paging through the catalogue."""
    if is_uuid(text):
        return text
    prefix = text.lower()
    if not ID_PREFIX.fullmatch(prefix) or len(prefix.replace("-", "")) < MIN_PREFIX_DIGITS:
        raise Failure(USAGE, f"an id, or at least its first {MIN_PREFIX_DIGITS} hex digits, not {text!r}")
    found: list[str] = []
    for video in client.catalogue():
        if video["id"].lower().startswith(prefix):
            found.append(video["id"])
            if len(found) > SHOWN_IDS:
                break  # ambiguous already, and enough to show
    if not found:
        raise Failure(NOT_FOUND, f"no video with id starting with {text}")
    if len(found) > 1:
        shown = ", ".join(found[:SHOWN_IDS]) + (", ..." if len(found) > SHOWN_IDS else "")
        raise Failure(USAGE, f"ambiguous: ids starting with {text}: {shown}; give more of the id")
    return found[0]


HANDLERS: dict[str, Callable[[Client, argparse.Namespace], int]] = {
    "upload": upload, "ls": ls, "info": info, "resize": resize, "download": download,
    "thumbnail": thumbnail, "rm": rm,
}  # fmt: skip


# -- how things look -------------------------------------------------------------------------------


def _human(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = round(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


def _status(video: dict[str, Any]) -> str:
    job = video.get("job")
    if video["processing"]:
        if job and job["state"] == "queued":
            return f"queued ({job['width']}x{job['height']})"
        return f"resizing to {job['width']}x{job['height']}, {video['progress'] or 0}%" if job else "resizing"
    if job and job["state"] == "failed":
        return f"resize failed: {job['error']}"
    if job and job["state"] == "cancelled":
        return "resize cancelled"
    return "ready"
