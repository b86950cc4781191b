"""Resize jobs: the runner (server side) and the job function (worker side). May import store and media."""
