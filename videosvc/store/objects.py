"""Where the bytes live: a folder, or an S3-compatible bucket, behind one small protocol.

This is the seam SPEC §15 asks for, and the first step of it: the two stores and
what the service needs of them (whole objects published at once, ranged reads of
one version, listing, presigned reads, and multipart uploads that can be resumed
by their id, which tus will need); `web/content.send_object` serves an object
as a file is served (proxy delivery). The service does not use them yet:
`storage.Storage` still lays out `data_dir`.

Keys are `/`-separated relative paths (`originals/<id>.mp4`); a key never starts
with `/` and never holds `..`. An object is published whole or not at all: the
file store writes beside it and renames, S3 makes an object visible when its PUT
or its multipart upload completes.

The S3 client is aiobotocore: of the maintained async clients it is the one that
exposes multipart uploads by their id (create, upload a part, list the parts,
complete, abort), so that an upload survives a restart of the service; obstore
(0.12) writes multipart uploads only as a stream it holds in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import mimetypes
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

#: What a ranged read hands over at a time.
CHUNK_BYTES = 256 * 1024
#: S3's most parts in one upload.
MAX_PARTS = 10_000


class ObjectMissing(Exception):
    """No object at that key (or no multipart upload of that id)."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    #: Changes whenever the object does (S3's ETag; inode, mtime and size for a file).
    etag: str
    #: When it was written (seconds since the epoch).
    modified: float


@dataclass(frozen=True)
class Part:
    number: int
    size: int
    etag: str


class ObjectStore(Protocol):
    """What the service needs of a store."""

    async def put_file(self, key: str, path: Path) -> None:
        """Publish the file's bytes at `key`, whole (a reader sees the old object or the new one)."""

    async def put_bytes(self, key: str, data: bytes) -> None:
        """Publish a few bytes at `key`, whole."""

    def read(
        self, key: str, start: int = 0, end: int | None = None, etag: str | None = None
    ) -> AsyncIterator[bytes]:
        """The bytes `start` to `end` (exclusive; None: to the end) of the object; with `etag`,
        of that version only (ObjectMissing when it has been replaced since)."""

    async def head(self, key: str) -> ObjectInfo | None: ...

    async def delete(self, key: str) -> None:
        """Gone, whether it was there or not."""

    async def list_objects(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with `prefix`, by key."""

    async def presign(self, key: str, expires_s: int) -> str | None:
        """A URL anyone may GET the object through until it expires; None from a store without one.
        (No response-header overrides: SeaweedFS 4.48 refuses their signatures when a value holds
        a `/` or a space, so an object carries its Content-Type from its PUT instead.)"""

    async def start_parts(self, key: str) -> str:
        """Begin a multipart upload to `key`; its id."""

    async def put_part(self, key: str, upload_id: str, number: int, data: bytes) -> Part: ...

    async def parts(self, key: str, upload_id: str) -> list[Part]:
        """The parts the store holds, by number (how an upload is resumed after a restart)."""

    async def finish_parts(self, key: str, upload_id: str, parts: list[Part]) -> None:
        """Publish the parts as one object at `key`."""

    async def abort_parts(self, key: str, upload_id: str) -> None:
        """Drop the upload and its parts (an abandoned upload's bytes)."""


def checked_key(key: str) -> str:
    """A key, or ValueError: no empty, `.`-led (hidden, `..`) or absolute parts."""
    if not key or any(not part or part.startswith(".") for part in key.split("/")):
        raise ValueError(f"not an object key: {key!r}")
    return key


def checked_span(start: int, end: int | None) -> None:
    if start < 0 or (end is not None and end < start):
        raise ValueError(f"not a span of bytes: {start} to {end}")


class FileObjects:
    """Objects as files under a folder; multipart uploads as numbered files beside them."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._uploads = root / ".multipart"

    def _path(self, key: str) -> Path:
        return self._root / checked_key(key)

    async def put_file(self, key: str, path: Path) -> None:
        await asyncio.to_thread(self._publish, self._path(key), lambda out: _copy_into(path, out))

    async def put_bytes(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._publish, self._path(key), lambda out: out.write_bytes(data))

    async def read(
        self, key: str, start: int = 0, end: int | None = None, etag: str | None = None
    ) -> AsyncIterator[bytes]:
        checked_span(start, end)
        try:
            f = await asyncio.to_thread(open, self._path(key), "rb")
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectMissing(key) from None
        with f:
            if etag is not None and _file_tag(os.fstat(f.fileno())) != etag:
                raise ObjectMissing(f"{key} has been replaced")
            f.seek(start)
            left = None if end is None else end - start
            while left is None or left > 0:
                chunk = await asyncio.to_thread(
                    f.read, CHUNK_BYTES if left is None else min(CHUNK_BYTES, left)
                )
                if not chunk:
                    return
                if left is not None:
                    left -= len(chunk)
                yield chunk

    async def head(self, key: str) -> ObjectInfo | None:
        try:
            st = await asyncio.to_thread(os.stat, self._path(key))
        except FileNotFoundError:
            return None
        return ObjectInfo(key, st.st_size, _file_tag(st), st.st_mtime)

    async def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(os.unlink, self._path(key))

    async def list_objects(self, prefix: str) -> list[ObjectInfo]:
        def walk() -> list[ObjectInfo]:
            found = []
            for path in self._root.rglob("*"):
                key = path.relative_to(self._root).as_posix()
                if key.startswith(".") or "/." in key or not key.startswith(prefix) or not path.is_file():
                    continue
                st = path.stat()
                found.append(ObjectInfo(key, st.st_size, _file_tag(st), st.st_mtime))
            return sorted(found, key=lambda o: o.key)

        return await asyncio.to_thread(walk)

    async def presign(self, key: str, expires_s: int) -> str | None:
        return None

    async def start_parts(self, key: str) -> str:
        upload_id = uuid.uuid4().hex
        folder = self._uploads / upload_id
        await asyncio.to_thread(folder.mkdir, parents=True)
        await asyncio.to_thread((folder / "key").write_text, checked_key(key))
        return upload_id

    def _upload(self, key: str, upload_id: str) -> Path:
        """The upload's folder; ObjectMissing unless it is an upload to `key` (as S3 answers)."""
        folder = self._uploads / upload_id
        try:
            if upload_id.isalnum() and (folder / "key").read_text() == key:
                return folder
        except OSError:
            pass
        raise ObjectMissing(f"no multipart upload {upload_id!r} to {key!r}")

    async def put_part(self, key: str, upload_id: str, number: int, data: bytes) -> Part:
        if not 1 <= number <= MAX_PARTS:
            raise ValueError(f"a part number is 1 to {MAX_PARTS}, not {number}")
        folder = self._upload(key, upload_id)
        await asyncio.to_thread(self._publish, folder / str(number), lambda out: out.write_bytes(data))
        return Part(number, len(data), hashlib.md5(data).hexdigest())

    async def parts(self, key: str, upload_id: str) -> list[Part]:
        folder = self._upload(key, upload_id)
        return await asyncio.to_thread(_parts_in, folder)

    async def finish_parts(self, key: str, upload_id: str, parts: list[Part]) -> None:
        folder = self._upload(key, upload_id)
        held = {part.number: part for part in await asyncio.to_thread(_parts_in, folder)}
        if [held.get(part.number) for part in parts] != parts:  # S3 refuses a stale list too
            raise ValueError("the parts given are not the parts the upload holds")

        def join(out: Path) -> None:
            with out.open("wb") as f:
                for part in parts:
                    with (folder / str(part.number)).open("rb") as src:
                        shutil.copyfileobj(src, f, CHUNK_BYTES)

        await asyncio.to_thread(self._publish, self._path(key), join)
        await asyncio.to_thread(shutil.rmtree, folder, True)

    async def abort_parts(self, key: str, upload_id: str) -> None:
        with contextlib.suppress(ObjectMissing):
            await asyncio.to_thread(shutil.rmtree, self._upload(key, upload_id), True)

    @staticmethod
    def _publish(path: Path, write: Any) -> None:
        """Write beside `path`, flush to disk, rename over it: whole or not at all."""
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            write(temp)
            with temp.open("rb+") as f:
                os.fsync(f.fileno())
            os.replace(temp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()


def _file_tag(st: os.stat_result) -> str:
    """A file's version: a new file (a rename over it) has a new inode."""
    return f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"


def _parts_in(folder: Path) -> list[Part]:
    found = []
    for path in sorted((p for p in folder.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)):
        data = path.read_bytes()
        found.append(Part(int(path.name), len(data), hashlib.md5(data).hexdigest()))
    return found


def _copy_into(source: Path, out: Path) -> None:
    with source.open("rb") as src, out.open("wb") as dst:
        shutil.copyfileobj(src, dst, CHUNK_BYTES)


@dataclass(frozen=True)
class S3Settings:
    endpoint_url: str
    bucket: str
    access_key_id: str
    secret_access_key: str
    region: str = "us-east-1"


class S3Objects:
    """Objects in an S3-compatible bucket (AWS, R2, MinIO, SeaweedFS, Garage) through aiobotocore."""

    def __init__(self, settings: S3Settings) -> None:
        self._settings = settings
        self._bucket = settings.bucket
        self._exit = contextlib.AsyncExitStack()
        self._client: Any = None

    async def open(self) -> None:
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        s = self._settings
        self._client = await self._exit.enter_async_context(
            get_session().create_client(
                "s3",
                endpoint_url=s.endpoint_url,
                region_name=s.region,
                aws_access_key_id=s.access_key_id,
                aws_secret_access_key=s.secret_access_key,
                # Path-style keys (`/bucket/key`): what self-hosted stores serve without DNS names.
                # Bodies are not hashed into the signature (as over https by default) but carry
                # a CRC32 the store checks: SHA-256 on the event loop was the cost of 4 parts at
                # once (0.73x boto3's threads; 0.83x without it, bench.s3). Across an untrusted
                # network, use an https endpoint.
                config=AioConfig(
                    s3={"addressing_style": "path", "payload_signing_enabled": False},
                    retries={"max_attempts": 3, "mode": "standard"},
                ),
            )
        )

    async def close(self) -> None:
        await self._exit.aclose()

    async def put_file(self, key: str, path: Path) -> None:
        # One PUT: S3 makes the object visible only once all of it has arrived.
        with path.open("rb") as body:
            await self._client.put_object(
                Bucket=self._bucket, Key=checked_key(key), Body=body, ContentType=_content_type(key)
            )

    async def put_bytes(self, key: str, data: bytes) -> None:
        await self._client.put_object(
            Bucket=self._bucket, Key=checked_key(key), Body=data, ContentType=_content_type(key)
        )

    async def read(
        self, key: str, start: int = 0, end: int | None = None, etag: str | None = None
    ) -> AsyncIterator[bytes]:
        checked_span(start, end)
        if end is not None and end <= start:
            return
        span = f"bytes={start}-" if end is None else f"bytes={start}-{end - 1}"
        version = {} if etag is None else {"IfMatch": f'"{etag}"'}
        try:
            answer = await self._client.get_object(
                Bucket=self._bucket, Key=checked_key(key), Range=span, **version
            )
        except self._client.exceptions.NoSuchKey:
            raise ObjectMissing(key) from None
        except self._client.exceptions.ClientError as e:
            if _code(e) == "InvalidRange":  # from past the end: nothing, as a file read gives
                return
            if _code(e) in ("PreconditionFailed", "412"):
                raise ObjectMissing(f"{key} has been replaced") from None
            raise
        async with answer["Body"] as body:
            while chunk := await body.read(CHUNK_BYTES):
                yield chunk

    async def head(self, key: str) -> ObjectInfo | None:
        try:
            answer = await self._client.head_object(Bucket=self._bucket, Key=checked_key(key))
        except self._client.exceptions.ClientError as e:
            if _code(e) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return ObjectInfo(
            key, answer["ContentLength"], answer["ETag"].strip('"'), answer["LastModified"].timestamp()
        )

    async def delete(self, key: str) -> None:
        await self._client.delete_object(Bucket=self._bucket, Key=checked_key(key))

    async def list_objects(self, prefix: str) -> list[ObjectInfo]:
        found = []
        paginator = self._client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self._bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                etag, modified = item["ETag"].strip('"'), item["LastModified"].timestamp()
                found.append(ObjectInfo(item["Key"], item["Size"], etag, modified))
        return sorted(found, key=lambda o: o.key)

    async def presign(self, key: str, expires_s: int) -> str | None:
        url: str = await self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self._bucket, "Key": checked_key(key)}, ExpiresIn=expires_s
        )
        return url

    async def start_parts(self, key: str) -> str:
        answer = await self._client.create_multipart_upload(
            Bucket=self._bucket, Key=checked_key(key), ContentType=_content_type(key)
        )
        upload_id: str = answer["UploadId"]
        return upload_id

    async def put_part(self, key: str, upload_id: str, number: int, data: bytes) -> Part:
        try:
            answer = await self._client.upload_part(
                Bucket=self._bucket, Key=checked_key(key), UploadId=upload_id, PartNumber=number, Body=data
            )
        except self._client.exceptions.NoSuchUpload:
            raise ObjectMissing(f"no multipart upload {upload_id!r}") from None
        return Part(number, len(data), answer["ETag"].strip('"'))

    async def parts(self, key: str, upload_id: str) -> list[Part]:
        found = []
        paginator = self._client.get_paginator("list_parts")
        try:
            async for page in paginator.paginate(
                Bucket=self._bucket, Key=checked_key(key), UploadId=upload_id
            ):
                for item in page.get("Parts", []):
                    found.append(Part(item["PartNumber"], item["Size"], item["ETag"].strip('"')))
        except self._client.exceptions.NoSuchUpload:
            raise ObjectMissing(f"no multipart upload {upload_id!r}") from None
        return sorted(found, key=lambda p: p.number)

    async def finish_parts(self, key: str, upload_id: str, parts: list[Part]) -> None:
        try:
            await self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=checked_key(key),
                UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": p.number, "ETag": f'"{p.etag}"'} for p in parts]},
            )
        except self._client.exceptions.NoSuchUpload:
            raise ObjectMissing(f"no multipart upload {upload_id!r}") from None

    async def abort_parts(self, key: str, upload_id: str) -> None:
        with contextlib.suppress(self._client.exceptions.NoSuchUpload):
            await self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=checked_key(key), UploadId=upload_id
            )


def _content_type(key: str) -> str:
    """What a presigned GET answers as Content-Type: by the key's extension."""
    return mimetypes.guess_type(key)[0] or "application/octet-stream"


def _code(error: Any) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))
