"""The command-line client: talks to a videosvc server over HTTP only.

May import: nothing of videosvc.
"""
