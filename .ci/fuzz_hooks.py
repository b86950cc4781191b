"""schemathesis hooks for .ci/fuzz: how to make a body of tus's own media type."""

import schemathesis
from hypothesis import strategies as st

# A tus PATCH body: any bytes (the server checks them against the upload, not a schema).
schemathesis.openapi.media_type("application/offset+octet-stream", st.binary(max_size=4096))
