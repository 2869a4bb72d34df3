"""Tests for titan.wire.frames: packing, incremental decoding and header checks."""
from __future__ import annotations

import random
from typing import List

import pytest

from titan.errors import CodecError, ProtocolError
from titan.wire.codec import encode
from titan.wire.frames import (
    DEFAULT_MAX_BODY_BYTES,
    FLAG_MORE,
    HEADER,
    PROTOCOL_VERSION,
    Frame,
    FrameDecoder,
    Op,
    error_body,
    pack,
)


def sample_frames(count: int, seed: int = 3) -> List[Frame]:
    rng = random.Random(seed)
    bodies = [None, {}, "x", {"id": "t-1", "cmd": ["sh", "-c", "echo |;["]}, b"\x00" * 300,
              [1.5, -2, True], {"nested": {"deep": [[], {}, "Grüße"]}}]
    ops = list(Op)
    return [Frame(int(rng.choice(ops)), rng.choice([0, FLAG_MORE]), rng.randrange(2**32),
                  rng.choice(bodies)) for _ in range(count)]


def stream_of(frames: List[Frame]) -> bytes:
    return b"".join(pack(f.opcode, f.req_id, f.body, f.flags) for f in frames)


def test_header_layout() -> None:
    data = pack(Op.SUBMIT, 7, None, FLAG_MORE)
    assert HEADER.size == 12
    assert data == bytes([PROTOCOL_VERSION, 0x10, 0, 1, 0, 0, 0, 7, 0, 0, 0, 1, 0])


def test_pack_feed_round_trip() -> None:
    frames = sample_frames(200)
    decoder = FrameDecoder()
    assert decoder.feed(stream_of(frames)) == frames
    assert decoder.buffered_bytes == 0 and not decoder.mid_frame


def test_one_byte_at_a_time_gives_the_same_frames() -> None:
    frames = sample_frames(50)
    decoder = FrameDecoder()
    got: List[Frame] = []
    for byte in stream_of(frames):
        got.extend(decoder.feed(bytes([byte])))
    assert got == frames
    assert not decoder.mid_frame


def test_random_splits_give_the_same_frames() -> None:
    frames = sample_frames(100)
    data = stream_of(frames)
    rng = random.Random(11)
    for _ in range(20):
        decoder = FrameDecoder()
        got: List[Frame] = []
        pos = 0
        while pos < len(data):
            step = rng.randrange(1, 64)
            got.extend(decoder.feed(data[pos : pos + step]))
            pos += step
        assert got == frames


def test_buffered_bytes_are_the_unfinished_frame_after_every_split() -> None:
    frames = sample_frames(60, seed=5)
    data = stream_of(frames)
    boundaries = [0]
    for frame in frames:
        boundaries.append(boundaries[-1] + len(pack(frame.opcode, frame.req_id, frame.body, frame.flags)))
    rng = random.Random(12)
    decoder = FrameDecoder()
    got: List[Frame] = []
    pos = 0
    while pos < len(data):
        step = rng.choice([1, 5, 12, 13, 40, 300, 2000])
        got.extend(decoder.feed(data[pos : pos + step]))
        pos = min(pos + step, len(data))
        last_boundary = max(b for b in boundaries if b <= pos)
        assert decoder.buffered_bytes == pos - last_boundary
        assert got == frames[: boundaries.index(last_boundary)]
    assert got == frames and not decoder.mid_frame


def test_large_frame_in_many_reads_then_small_frames_in_the_last() -> None:
    big = Frame(Op.OUTPUT, 0, 1, {"data": b"x" * 100_000})
    small = [Frame(Op.ACK, 0, 0, {"upto": n}) for n in range(3)]
    data = stream_of([big] + small)
    decoder = FrameDecoder()
    chunks = [data[pos : pos + 4096] for pos in range(0, len(data), 4096)]
    got: List[Frame] = []
    for chunk in chunks[:-1]:
        got.extend(decoder.feed(chunk))
    assert got == [] and decoder.mid_frame
    assert decoder.feed(chunks[-1]) == [big] + small
    assert not decoder.mid_frame


def test_oversized_header_after_a_partial_one_is_rejected_on_its_12th_byte() -> None:
    decoder = FrameDecoder(max_body_bytes=100)
    header = HEADER.pack(PROTOCOL_VERSION, Op.OK, 0, 8, 101)
    assert decoder.feed(pack(Op.PING, 1) + header[:7]) == [Frame(Op.PING, 0, 1, None)]
    assert decoder.feed(header[7:11]) == []
    with pytest.raises(ProtocolError) as info:
        decoder.feed(header[11:])
    assert info.value.code == "frame_too_large" and info.value.req_id == 8


def test_thousand_small_frames_in_one_chunk() -> None:
    frames = [Frame(Op.PING, 0, i, None) for i in range(1000)]
    decoder = FrameDecoder()
    got = decoder.feed(stream_of(frames) + pack(Op.PONG, 1, "partial")[:5])
    assert got == frames
    assert decoder.buffered_bytes == 5 and decoder.mid_frame


def test_buffered_bytes_and_mid_frame() -> None:
    data = pack(Op.OK, 9, {"a": 1})
    decoder = FrameDecoder()
    assert decoder.buffered_bytes == 0 and not decoder.mid_frame
    assert decoder.feed(data[:3]) == []
    assert decoder.buffered_bytes == 3 and decoder.mid_frame
    assert decoder.feed(data[3:14]) == []
    assert decoder.buffered_bytes == 14 and decoder.mid_frame
    assert decoder.feed(data[14:]) == [Frame(Op.OK, 0, 9, {"a": 1})]
    assert decoder.buffered_bytes == 0 and not decoder.mid_frame


def test_frame_fields_and_opcodes_are_not_validated() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(pack(0xEE, 2**32 - 1, [], 0xFFFF)) == [Frame(0xEE, 0xFFFF, 2**32 - 1, [])]


def test_bad_version_is_rejected_once_header_is_in() -> None:
    header = HEADER.pack(7, Op.PING, 0, 1, 1)
    decoder = FrameDecoder()
    assert decoder.feed(header[:11]) == []
    with pytest.raises(ProtocolError) as info:
        decoder.feed(header[11:])
    assert info.value.code == "bad_version"
    assert str(info.value) == "protocol version 7 is not supported (this peer speaks 1)"


def test_huge_length_rejected_right_after_header() -> None:
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError) as info:
        decoder.feed(HEADER.pack(PROTOCOL_VERSION, Op.SUBMIT, 0, 5, 0xFFFFFFFF))
    assert info.value.code == "frame_too_large" and info.value.req_id == 5
    assert "frame body of 4294967295 bytes exceeds the 67108864-byte limit" in info.value.message


def test_custom_max_body_bytes() -> None:
    decoder = FrameDecoder(max_body_bytes=8)
    assert decoder.feed(pack(Op.OK, 1, "abc")) == [Frame(Op.OK, 0, 1, "abc")]  # 8-byte body
    with pytest.raises(ProtocolError, match="frame body of 10 bytes exceeds the 8-byte limit"):
        decoder.feed(pack(Op.OK, 2, "hello"))


def test_bad_body_carries_request_id() -> None:
    bad = HEADER.pack(PROTOCOL_VERSION, Op.SUBMIT, 0, 42, 2) + b"\x7f\x00"
    decoder = FrameDecoder()
    with pytest.raises(CodecError) as info:
        decoder.feed(pack(Op.PING, 1) + bad)
    assert info.value.code == "bad_body" and info.value.req_id == 42
    assert "unknown type tag 0x7f at byte 0" in info.value.message


def test_decoder_is_unusable_after_an_error() -> None:
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError):
        decoder.feed(HEADER.pack(9, 0, 0, 0, 0))
    with pytest.raises(ProtocolError) as info:
        decoder.feed(pack(Op.PING, 1))
    assert info.value.code == "bad_version"


def test_max_depth_is_passed_to_the_codec() -> None:
    decoder = FrameDecoder(max_depth=1)
    assert decoder.feed(pack(Op.OK, 1, [])) == [Frame(Op.OK, 0, 1, [])]
    with pytest.raises(CodecError, match="max_depth=1"):
        decoder.feed(pack(Op.OK, 3, [[]]))


def test_pack_rejects_oversized_body() -> None:
    with pytest.raises(ProtocolError) as info:
        pack(Op.OUTPUT, 3, b"x" * 100, max_body_bytes=50)
    assert info.value.code == "frame_too_large" and info.value.req_id == 3
    assert "105 bytes exceeds the 50-byte limit" in info.value.message
    assert DEFAULT_MAX_BODY_BYTES == 64 * 1024 * 1024


def test_pack_rejects_fields_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="request id 4294967296"):
        pack(Op.PING, 2**32)
    with pytest.raises(ValueError, match="opcode 256"):
        pack(256, 1)


def test_pack_body_errors_are_codec_errors() -> None:
    with pytest.raises(CodecError, match="unsupported type"):
        pack(Op.SUBMIT, 1, {"x": object()})


def test_error_body() -> None:
    assert error_body("unknown_opcode", "opcode 0xee is not known") == {
        "code": "unknown_opcode", "message": "opcode 0xee is not known"}
    assert pack(Op.ERROR, 4, error_body("a", "b"))[12:] == encode({"code": "a", "message": "b"})


def test_opcode_values() -> None:
    assert (Op.HELLO, Op.PONG, Op.SUBMIT, Op.RETRY, Op.HEARTBEAT, Op.RUN_DONE) == (
        0x01, 0x09, 0x10, 0x18, 0x20, 0x27)
    assert len({int(op) for op in Op}) == len(Op)  # no aliases
