"""The HTTP layer: routes, handlers, schemas, middlewares, the connection's limits, the page.

Handlers are thin: they parse, call the domain (`videos`, `uploads`), and shape
the answer; `keys` holds the typed application keys of everything the app
holds, which is why this layer may name the domain's types.

May import: aio, config, errors, events, hooks, jobs, logs, media, signing, store, uploads, videos.
"""
