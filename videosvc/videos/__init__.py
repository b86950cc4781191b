"""The use cases of a video: publish, view, catalogue, resize, restore, delete, recovery."""
