"""What happens in the service, told once, and those who listen: webhooks, live streams, metrics.

`bus` carries the events (a video changed, a job ended, bytes moved, the outbox
grew or shrank) to typed listeners; `outbox` makes the webhook messages a change
writes in its own transaction; `webhooks`, `live` and `metrics` are the three
subscribers, side by side. Nothing here knows HTTP requests: the web layer
serves live streams and metrics, and gives the GET shape they carry.

May import: config, errors, store.
"""
