"""The finishing touches on the OpenAPI document apigami builds from the handlers' schemas."""

from __future__ import annotations

from typing import Any

from ..config import Settings

#: Operations that take the id that POST /file/ returns: OpenAPI links lead clients (and
#: schemathesis' stateful phase) from an upload to them.
ID_OPERATIONS = ("getFile", "resizeFile", "deleteFile", "getFileContent")


def finish_document(spec: dict[str, Any], settings: Settings) -> None:
    for item in spec["paths"].values():
        for operation in item.values():
            # apigami's docs() adds Swagger 2's `produces` to every operation; OpenAPI 3 has no such key.
            operation.pop("produces", None)
            operation.pop("consumes", None)
    properties = spec["components"]["schemas"]["ResizeRequest"]["properties"]
    for name in ("width", "height"):
        properties[name]["maximum"] = settings.jobs.max_dimension
    upload = spec["paths"]["/file/"]["post"]["responses"]["200"]
    upload["links"] = {
        operation_id: {
            "operationId": operation_id,
            "parameters": {"id": "$response.body#/id"},
            "description": "The `id` in the answer names the stored video",
        }
        for operation_id in ID_OPERATIONS
    }
