"""What a job is handed to a worker as: its `ResizeJob`, made from the records, the settings and the
machine (how many threads it may use beside the others)."""

from __future__ import annotations

from ..config import Settings, usable_cpus
from ..media.probe import Toolchain
from ..store.records import JobRecord, VideoRecord
from ..store.storage import Storage
from .contract import JobFiles, ResizeJob


class SpecBuilder:
    def __init__(self, settings: Settings, storage: Storage, tools: Toolchain, cluster: bool) -> None:
        self._settings = settings
        self._storage = storage
        self._tools = tools
        #: On a cluster, workers run on CPUs of their own and count their own executions.
        self._cluster = cluster
        self._cpus = usable_cpus()

    def spec(self, job: JobRecord, video: VideoRecord, files: JobFiles, side_by_side: int) -> ResizeJob:
        """`side_by_side`: the jobs that will run at once, this one included (for its threads)."""
        settings = self._settings
        # From the original when it is kept: repeated resizes never compound their losses.
        original = video.original if settings.storage.keep_original else None
        storage = self._storage
        source = storage.original_path(job.video_id) if original else storage.video_path(job.video_id)
        return ResizeJob(
            source=str(source),
            source_audio_codecs=original.audio_codecs if original else video.audio_codecs,
            directory=str(files.directory),
            width=job.width,
            height=job.height,
            tools=self._tools,
            x264_preset=settings.ffmpeg.x264_preset,
            x264_crf=settings.ffmpeg.x264_crf,
            timeout_s=settings.jobs.job_timeout_s,
            max_memory_bytes=settings.ffmpeg.ffmpeg_max_memory_bytes,
            min_free_bytes=settings.storage.min_free_bytes,
            # A cluster reruns the task of a worker that died: the job counts those itself.
            max_attempts=settings.jobs.job_max_attempts if self._cluster else 0,
            threads=0 if self._cluster else self.threads_per_job(side_by_side),
        )

    def threads_per_job(self, side_by_side: int) -> int:
        """The CPUs shared among the jobs that run side by side; a lone job gets them all.

        ffmpeg's own choice (threads for every CPU in each process) oversubscribes a busy
        pool: two 2-thread encodes on 2 CPUs finish a batch ~4% later than two of 1 thread.
        """
        return max(1, self._cpus // max(1, side_by_side))


def expected_output_bytes(video: VideoRecord, job: JobRecord) -> int:
    """What a resize may write, for its disk reservation: the source's bytes per pixel at the new
    size (never less than the source), with half again for a worse guess."""
    source = video.original or video
    scale = job.width * job.height / max(1, source.width * source.height)
    return int(source.size_bytes * max(1.0, scale) * 1.5)
