"""schemathesis hooks for .ci/fuzz: how to make a body of tus's own media type."""

from hypothesis import strategies as st

import schemathesis

# A tus PATCH body: any bytes (the server checks them against the upload, not a schema).
schemathesis.openapi.media_type("application/offset+octet-stream", st.binary(max_size=4096))
