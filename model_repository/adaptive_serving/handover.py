"""Hand-over of standard-lane requests from the router to `router_standard` over a local socket, not BLS.

Why: under overload on 2 cores the work at normal CPU priority nearly filled both cores, and a BLS call is costly
there: tritonserver builds a child request, moves its tensors through shared memory, schedules it and sends its
response back, and the router's stub carries the call on an executor thread, all at normal priority, for every
request that is not critical. Over a Unix socket the hand-over is a message each way, read by `router_standard` in
its own (low-priority) process. The measurements: docs/lab-notes/2026-11-29-bench-classes.md (item 13).

Each `router_standard` instance listens on an abstract Unix socket (no file to clean up) named after the user,
the server process (the stubs' parent) and the first free index; each router instance connects to all of them
and sends each request to the one with the fewest in flight. Both ends check the peer's user id
(`SO_PEERCRED`), so another user's process can neither send work nor pose as `router_standard`.

A message is a frame: an 8-byte prefix (JSON header length, payload length), a JSON header, and the arrays'
raw bytes. Arrays are numeric (dtypes in `DTYPES`) or byte strings (lengths in the header). A frame over
`MAX_FRAME_BYTES` is refused: the router's inputs are capped far below it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable

import numpy as np

SLOTS = 64  # router_standard instances one server may hold
MAX_FRAME_BYTES = 64 << 20
DTYPES = frozenset({"int64", "int32", "float32", "bool"})
RESCAN_INTERVAL_S = 1.0  # a router without a live connection looks for listeners again at most this often
_PREFIX = struct.Struct("!II")

Arrays = dict[str, np.ndarray]
# (header, arrays) of a request -> (header, arrays) of its answer
Handler = Callable[[dict, Arrays], Awaitable[tuple[dict, Arrays]]]


class HandoverError(ConnectionError):
    """No listener is reachable, or the connection carrying a call was lost."""


def socket_name(model: str, index: int, server_pid: int | None = None) -> bytes:
    """Abstract socket address of `model`'s listener `index` in the server `server_pid` (default: this stub's)."""
    pid = os.getppid() if server_pid is None else server_pid
    return f"\0adaptive-serving-{os.getuid()}-{pid}-{model}-{index}".encode()


def encode(header: dict, arrays: Arrays) -> bytes:
    """One frame: `header` (JSON-serializable) plus `arrays` (numeric, or object arrays of bytes).

    Raises:
        ValueError: an array's dtype is not allowed, or the frame is over `MAX_FRAME_BYTES`.
    """
    specs, chunks = [], []
    for name, array in arrays.items():
        if array.dtype == np.object_:
            items = [bytes(x) for x in array.reshape(-1)]
            specs.append([name, "bytes", list(array.shape), [len(x) for x in items]])
            chunks.extend(items)
        elif array.dtype.name in DTYPES:
            specs.append([name, array.dtype.name, list(array.shape)])
            chunks.append(np.ascontiguousarray(array).tobytes())
        else:
            raise ValueError(f"hand-over: array {name!r} has dtype {array.dtype}, allowed: {sorted(DTYPES)} or bytes")
    head = json.dumps({**header, "arrays": specs}).encode()
    body = b"".join(chunks)
    if len(head) + len(body) > MAX_FRAME_BYTES:
        raise ValueError(f"hand-over: frame of {len(head) + len(body)} bytes is over {MAX_FRAME_BYTES}")
    return _PREFIX.pack(len(head), len(body)) + head + body


def decode(head: bytes, body: bytes) -> tuple[dict, Arrays]:
    """Inverse of `encode` (without the prefix).

    Raises:
        ValueError: the header or the arrays do not match the payload.
    """
    header = json.loads(head)
    arrays, at = {}, 0
    for spec in header.pop("arrays"):
        name, dtype, shape = spec[0], spec[1], tuple(spec[2])
        if dtype == "bytes":
            items = []
            for n in spec[3]:
                items.append(body[at : at + n])
                at += n
            array = np.empty(len(items), np.object_)
            array[:] = items
        elif dtype in DTYPES:
            count = int(np.prod(shape, dtype=np.int64))
            # A copy: frombuffer's view would be read-only, and would keep the whole payload alive.
            array = np.frombuffer(body, dtype, count=count, offset=at).copy()
            at += count * np.dtype(dtype).itemsize
        else:
            raise ValueError(f"hand-over: array {name!r} has dtype {dtype!r}")
        arrays[name] = array.reshape(shape)
    if at != len(body):
        raise ValueError(f"hand-over: arrays take {at} bytes of a {len(body)}-byte payload")
    return header, arrays


async def read_frame(reader: asyncio.StreamReader) -> tuple[dict, Arrays]:
    """The next frame from `reader`.

    Raises:
        asyncio.IncompleteReadError: the peer closed the connection.
        ValueError: the frame is over `MAX_FRAME_BYTES` or malformed.
    """
    head_len, body_len = _PREFIX.unpack(await reader.readexactly(_PREFIX.size))
    if head_len + body_len > MAX_FRAME_BYTES:
        raise ValueError(f"hand-over: frame of {head_len + body_len} bytes is over {MAX_FRAME_BYTES}")
    head = await reader.readexactly(head_len)
    return decode(head, await reader.readexactly(body_len))


def check_peer(sock: socket.socket) -> None:
    """Refuse a peer that runs as another user.

    Raises:
        PermissionError: the peer's user id is not ours.
    """
    _, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    if uid != os.getuid():
        raise PermissionError(f"hand-over: peer runs as uid {uid}, not {os.getuid()}")


class HandoverServer:
    """A listener of one `router_standard` instance: every frame it receives runs `handler` as a task, and the
    handler's answer goes back on the same connection with the request's `id`. A handler that raises answers with
    an `error` header field ({"message", "code": None}).

    Args:
        model: the listening model's name (part of the socket's address).
        handler: the work; it must answer every request (errors as a header field, not an exception).
        server_pid: the tritonserver process (default: this stub's parent).
    """

    def __init__(self, model: str, handler: Handler, *, server_pid: int | None = None) -> None:
        self.model = model
        self.handler = handler
        self.server_pid = server_pid
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> int:
        """Listen on the first free index; returns it.

        Raises:
            OSError: every index is taken, or the socket cannot be made.
        """
        for index in range(SLOTS):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(socket_name(self.model, index, self.server_pid))
            except OSError:
                sock.close()
                continue
            self._server = await asyncio.start_unix_server(self._serve, sock=sock)
            return index
        raise OSError(f"hand-over: all {SLOTS} listener slots of {self.model} are taken")

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            check_peer(writer.get_extra_info("socket"))
            while True:
                header, arrays = await read_frame(reader)
                task = asyncio.ensure_future(self._answer(header, arrays, writer))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except (asyncio.IncompleteReadError, ConnectionError, PermissionError, ValueError):
            writer.close()  # the peer left, or is not one of ours, or broke the protocol: drop the connection

    async def _answer(self, header: dict, arrays: Arrays, writer: asyncio.StreamWriter) -> None:
        try:
            reply, outputs = await self.handler(header, arrays)
        except Exception as e:  # the caller waits for an answer: a fault in one request answers it with an error
            reply, outputs = {"error": {"message": f"internal error: {type(e).__name__}: {e}", "code": None}}, {}
        if not writer.is_closing():
            writer.write(encode({**reply, "id": header["id"]}, outputs))


class _Connection:
    """One connection to a listener: its calls waiting for an answer, and the task that reads the answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.pending: dict[int, asyncio.Future] = {}
        self.task = asyncio.ensure_future(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                header, arrays = await read_frame(reader)
                future = self.pending.pop(header.pop("id"), None)
                if future is not None and not future.done():
                    future.set_result((header, arrays))
        except Exception as e:  # the peer left, or broke the protocol: every call still waiting must fail, not hang
            why = f"{type(e).__name__}: {e}"
        lost = HandoverError(f"hand-over: connection lost ({why})")
        self.writer.close()
        for future in self.pending.values():
            if not future.done():
                future.set_exception(lost)
        self.pending.clear()

    @property
    def alive(self) -> bool:
        return not self.task.done()


class HandoverClient:
    """A router instance's connections to the listeners of `model`. Runs on one event loop; not thread-safe.

    Args:
        model: the listening model's name.
        server_pid: the tritonserver process (default: this stub's parent).
    """

    def __init__(self, model: str, *, server_pid: int | None = None) -> None:
        self.model = model
        self.server_pid = server_pid
        self._connections: list[_Connection] = []
        self._ids = itertools.count()
        self._next_scan = 0.0

    async def connect(self) -> int:
        """With no live connection, connect to every listener there is; returns the number of live connections. (A
        restarted listener is found once no connection is left, as when Triton reloads the whole model; until then
        the other listeners take its share.)"""
        self._connections = [c for c in self._connections if c.alive]
        self._next_scan = time.monotonic() + RESCAN_INTERVAL_S
        if self._connections:
            return len(self._connections)
        for index in range(SLOTS):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(socket_name(self.model, index, self.server_pid))
                check_peer(sock)
            except OSError:  # no listener at this index (or not ours)
                sock.close()
                continue
            sock.setblocking(False)
            reader, writer = await asyncio.open_unix_connection(sock=sock)
            self._connections.append(_Connection(reader, writer))
        return len(self._connections)

    async def call(self, header: dict, arrays: Arrays) -> tuple[dict, Arrays]:
        """Send one request to the least busy listener and wait for its answer.

        Raises:
            HandoverError: no listener is reachable, or the connection was lost before the answer came.
            ValueError: the request cannot be encoded (see `encode`).
        """
        live = [c for c in self._connections if c.alive]
        if not live and time.monotonic() >= self._next_scan:
            await self.connect()
            live = [c for c in self._connections if c.alive]
        if not live:
            raise HandoverError(f"hand-over: no listener of {self.model} is reachable")
        connection = min(live, key=lambda c: len(c.pending))
        call_id = next(self._ids)
        frame = encode({**header, "id": call_id}, arrays)
        future = asyncio.get_running_loop().create_future()
        connection.pending[call_id] = future
        connection.writer.write(frame)
        return await future

    def close(self) -> None:
        for connection in self._connections:
            connection.writer.close()
            connection.task.cancel()
        self._connections.clear()
