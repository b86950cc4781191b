"""Request-body parsing for apigami's validation middleware.

webargs' stock aiohttp parser ignores a body whose Content-Type is not JSON
(so `curl -d '{...}'` would read as empty) and answers errors in its own
shape. This parser reads any body as JSON and raises `InvalidRequest` with a
message that names the field and the rule, so errors keep the one JSON shape.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, NoReturn

from aiohttp import web
from marshmallow import Schema, ValidationError
from webargs.aiohttpparser import AIOHTTPParser

from ..errors import BodyTimeout, ClientGone, InvalidRequest
from .keys import SETTINGS
from .uploads import MALFORMED, said


class JsonBodyParser(AIOHTTPParser):
    async def load_json(self, req: web.Request, schema: Schema) -> Any:
        timeout_s = req.app[SETTINGS].http.body_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                body = await req.read()
        except TimeoutError:
            raise BodyTimeout(
                f"the request body did not arrive within {timeout_s:g} s (body_timeout_s)"
            ) from None
        except ConnectionError as e:
            raise ClientGone(str(e) or type(e).__name__) from None
        except MALFORMED as e:
            raise InvalidRequest(f"the request body is malformed: {said(e)}") from None
        if not body.strip():
            raise InvalidRequest("the request body is empty: send a JSON object")
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InvalidRequest(f"the request body is not valid JSON: {said(e)}") from None
        except ValueError:  # an integer of thousands of digits (int_max_str_digits)
            raise InvalidRequest("the request body is not valid JSON: a number in it is too long") from None
        except RecursionError:  # thousands of nested brackets fit in the size cap
            raise InvalidRequest("the request body is not valid JSON: nested too deeply") from None

    def handle_error(
        self,
        error: ValidationError,
        req: web.Request,
        schema: Schema,
        *,
        error_status_code: int | None,
        error_headers: Any,
    ) -> NoReturn:
        raise InvalidRequest(describe_validation_error(error.messages, sorted(schema.fields)))


def describe_validation_error(messages: Any, allowed: list[str]) -> str:
    """{'json': {'width': ['must be even, got 15']}} -> 'width: must be even, got 15'."""
    if isinstance(messages, dict) and set(messages) == {"json"}:
        messages = messages["json"]
    if isinstance(messages, dict):
        parts = []
        for field, problems in sorted(messages.items()):
            text = "; ".join(map(str, problems)) if isinstance(problems, list) else str(problems)
            if field == "_schema":
                parts.append("the request body must be a JSON object")
            elif text == "Unknown field.":
                parts.append(f"{field}: unknown field (allowed: {', '.join(allowed)})")
            else:
                parts.append(f"{field}: {text}")
        return "; ".join(parts)
    return str(messages)
