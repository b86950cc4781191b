"""The command-line client: talks to a videosvc server over HTTP only; imports nothing of the server."""
