"""A process that sends an upload in parts until it is killed (tests/test_objects.py).

    python -m tests.parted_child STORE KEY UPLOAD_ID PART_BYTES DATA_FILE

STORE is a folder, or an S3 endpoint URL (its bucket and keys in VIDEOSVC_TEST_S3_*).
It resumes the upload at the offset the store holds and appends the rest of DATA_FILE
in 700 KB requests, each saved as a tus PATCH ends; it prints each offset reached.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from videosvc.store.objects import FileObjects, ObjectStore, S3Objects, S3Settings
from videosvc.uploads.parted import PartedUpload

REQUEST_BYTES = 700_000


async def main(where: str, key: str, upload_id: str, part_bytes: int, data_file: str) -> None:
    data = Path(data_file).read_bytes()
    store: ObjectStore
    if where.startswith("http"):
        s3 = S3Objects(
            S3Settings(where, os.environ["VIDEOSVC_TEST_S3_BUCKET"], os.environ["VIDEOSVC_TEST_S3_KEY"],
                       os.environ["VIDEOSVC_TEST_S3_SECRET"])
        )  # fmt: skip
        await s3.open()
        store = s3
    else:
        store = FileObjects(Path(where))
    upload = PartedUpload(store, key, upload_id, part_bytes)
    offset = await upload.offset()
    while offset < len(data):
        await upload.append(data[offset : offset + REQUEST_BYTES])
        await upload.save()
        offset = await upload.offset()
        print(offset, flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]))
