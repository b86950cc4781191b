"""`python -m tests.paused_server run`: the service with a minute's pause between replacing a video
with a job's output and recording the job, so a crash test can kill it inside that window.

The pause is injected through `create_app`'s hooks: the service itself reads no test switch.
"""

from __future__ import annotations

import asyncio
import sys

from videosvc.config import load_settings
from videosvc.hooks import Hooks
from videosvc.logs import setup_logging
from videosvc.server import serve


async def pause() -> None:
    await asyncio.sleep(60)


def main() -> None:
    settings = load_settings(None)
    setup_logging(settings.log)
    asyncio.run(serve(settings, "paused before each job's record", Hooks(before_record=pause)))


if __name__ == "__main__" and sys.argv[1:] == ["run"]:
    main()
