"""Without API keys a client is its address (SPEC §12): it gets its share of connections, not all."""

from __future__ import annotations

import asyncio

from .server import ServerProcess


async def test_one_address_cannot_hold_every_connection(data_dir) -> None:  # type: ignore[no-untyped-def]
    with ServerProcess(data_dir, max_connections=100, max_connections_per_client=3) as server:
        held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        answer = await asyncio.wait_for(reader.read(), 10)  # refused at once, before any request
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503 ") and b"max_connections_per_client" in answer
        held[0][1].close()  # one goes: its place is free again
        await asyncio.sleep(0.2)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.1 200 ")
        writer.close()
        for _, other in held[1:]:
            other.close()
