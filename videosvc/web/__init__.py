"""The HTTP layer: routes, handlers, schemas, middlewares. May import the service, config and errors."""
