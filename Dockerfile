# videosvc: python:3.11-slim with Debian's ffmpeg, run as a non-root user.
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY setup.py pyproject.toml README.md config.toml ./
COPY sql ./sql
COPY videosvc ./videosvc
# The dask extra: the same image serves as the API, a Dask scheduler and a Dask worker (compose.yaml).
RUN pip install --no-cache-dir '.[dask,backup]' \
    && useradd --system --uid 10001 --home-dir /data videosvc \
    && mkdir -p /data \
    && chown videosvc /data

ENV VIDEOSVC_HOST=0.0.0.0 \
    VIDEOSVC_PORT=8080 \
    VIDEOSVC_DATA_DIR=/data \
    PYTHONUNBUFFERED=1

USER videosvc
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('VIDEOSVC_PORT', '8080'), timeout=4)"

# SIGTERM (docker stop) shuts down gracefully: in-flight requests finish, jobs resume at next start.
CMD ["python", "-m", "videosvc", "run", "--config", "/app/config.toml"]
