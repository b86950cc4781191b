"""Resize jobs: the runner and its parts (server side), and the job function (worker side).

`runner` (the queue, the runs, stopping them), `admission` (how many may be
queued), `specs` (a job as a worker gets it), `outcomes` (the one place where a
job ends), `recovery` (what the last run left), `contract` (what both sides
share), `worker` (the resize itself) and `backends/` (a process pool, or Dask).
The worker side imports only `contract`, `media` and `store.records`.

May import: config, errors, events, hooks, media, store.
"""
