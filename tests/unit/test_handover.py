"""The router -> router_standard hand-over channel (`adaptive_serving.handover`), in one process: frames, routing to
the least busy listener, a listener that goes away, and refusing what it must."""

from __future__ import annotations

import asyncio
import os
import sys

import numpy as np
import pytest

from adaptive_serving import handover
from adaptive_serving.handover import HandoverClient, HandoverError, HandoverServer, decode, encode

# A pid no server has: the sockets of these tests never meet a real server's.
FAKE_SERVER = 4_000_000 + os.getpid()


def test_frames_round_trip_numbers_and_byte_strings() -> None:
    arrays = {
        "TEXT": np.array([[b"caf\xc3\xa9"], [b""]], dtype=np.object_),
        "ids": np.arange(6, dtype=np.int64).reshape(2, 3),
        "cut": np.array([[True], [False]]),
        "score": np.array([[0.25], [1.5]], np.float32),
    }
    frame = encode({"timeout_us": 50_000}, arrays)
    head_len, body_len = handover._PREFIX.unpack(frame[: handover._PREFIX.size])
    header, back = decode(frame[8 : 8 + head_len], frame[8 + head_len :])
    assert len(frame) == 8 + head_len + body_len
    assert header == {"timeout_us": 50_000}
    assert list(back) == list(arrays)
    for name, array in arrays.items():
        assert back[name].dtype == array.dtype and back[name].shape == array.shape
        assert back[name].tolist() == array.tolist()
    back["ids"][0, 0] = 7  # decoded arrays are the receiver's own (writable, not views of the payload)


def test_encode_refuses_other_dtypes_and_oversized_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="'x' has dtype float64"):
        encode({}, {"x": np.zeros(2)})
    monkeypatch.setattr(handover, "MAX_FRAME_BYTES", 100)
    with pytest.raises(ValueError, match="over 100"):
        encode({}, {"ids": np.zeros(100, np.int64)})


def test_decode_refuses_a_payload_that_does_not_match_its_header() -> None:
    frame = encode({}, {"ids": np.zeros(4, np.int64)})
    head_len = handover._PREFIX.unpack(frame[:8])[0]
    with pytest.raises(ValueError, match="take 32 bytes of a 40-byte payload"):
        decode(frame[8 : 8 + head_len], frame[8 + head_len :] + bytes(8))


async def _double(header: dict, arrays: dict) -> tuple[dict, dict]:
    await asyncio.sleep(header.get("sleep_s", 0))
    if header.get("fail"):
        raise RuntimeError("asked to fail")
    return {"who": header["who"]}, {"ids": arrays["ids"] * 2}


def test_calls_reach_listeners_and_spread_over_them() -> None:
    async def main() -> None:
        servers = [HandoverServer("router_standard", _double, server_pid=FAKE_SERVER) for _ in range(2)]
        assert [await s.start() for s in servers] == [0, 1]  # each instance takes the first free index
        client = HandoverClient("router_standard", server_pid=FAKE_SERVER)
        assert await client.connect() == 2
        ids = np.arange(3, dtype=np.int64)
        # Eight slow calls at once, each answered with its own result (the spread: the test below).
        calls = [client.call({"who": i, "sleep_s": 0.05}, {"ids": ids + i}) for i in range(8)]
        replies = await asyncio.gather(*calls)
        assert [r[0]["who"] for r in replies] == list(range(8))
        assert all(r[1]["ids"].tolist() == ((ids + i) * 2).tolist() for i, r in enumerate(replies))
        # A handler that raises still answers its call, with an error field; the connection keeps serving.
        reply, outputs = await client.call({"who": 9, "fail": True}, {"ids": ids})
        assert reply["error"]["message"] == "internal error: RuntimeError: asked to fail" and outputs == {}
        assert (await client.call({"who": 10}, {"ids": ids}))[0] == {"who": 10}
        client.close()
        for s in servers:
            s.close()

    asyncio.run(main())


def test_spread_counts_calls_in_flight_per_listener() -> None:
    async def main() -> None:
        servers = [HandoverServer("router_standard", _double, server_pid=FAKE_SERVER) for _ in range(2)]
        for s in servers:
            await s.start()
        client = HandoverClient("router_standard", server_pid=FAKE_SERVER)
        await client.connect()
        calls = [
            asyncio.ensure_future(client.call({"who": i, "sleep_s": 0.2}, {"ids": np.zeros(1, np.int64)}))
            for i in range(4)
        ]
        await asyncio.sleep(0.05)
        assert sorted(len(c.pending) for c in client._connections) == [2, 2]
        await asyncio.gather(*calls)
        client.close()
        for s in servers:
            s.close()

    asyncio.run(main())


LISTENER = """
import asyncio, sys
from adaptive_serving.handover import HandoverServer

async def slow(header, arrays):
    await asyncio.sleep(60)
    return {}, {}

async def main():
    await HandoverServer("router_standard", slow, server_pid=int(sys.argv[1])).start()
    print("listening", flush=True)
    await asyncio.sleep(120)

asyncio.run(main())
"""


def test_a_listener_process_that_dies_fails_its_calls_and_leaves_no_listener() -> None:
    async def main() -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", LISTENER, str(FAKE_SERVER + 2), stdout=asyncio.subprocess.PIPE
        )
        try:
            assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"listening\n"
            client = HandoverClient("router_standard", server_pid=FAKE_SERVER + 2)
            call = asyncio.ensure_future(client.call({"who": 1}, {"ids": np.zeros(1, np.int64)}))
            await asyncio.sleep(0.1)
            assert not call.done()
            proc.kill()  # as a stub that crashes
            with pytest.raises(HandoverError, match="connection lost"):
                await asyncio.wait_for(call, 5)
            await proc.wait()  # until the process is gone, its listener may still take a connection
            client._next_scan = 0.0  # skip the rescan interval
            with pytest.raises(HandoverError, match="no listener of router_standard is reachable"):
                await client.call({"who": 2}, {"ids": np.zeros(1, np.int64)})
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()

    asyncio.run(main())


def test_no_listener_means_a_handover_error() -> None:
    async def main() -> None:
        client = HandoverClient("router_standard", server_pid=FAKE_SERVER + 1)
        assert await client.connect() == 0
        with pytest.raises(HandoverError, match="no listener"):
            await client.call({}, {})

    asyncio.run(main())
