"""Tests for titan.wire.codec: round-trips, exact encodings and every decode limit.

Run as a script for the hot-path micro check (not a test; timings are noisy)::

    cd /work/main && PYTHONPATH=. python3 tests/test_codec.py
"""
from __future__ import annotations

import enum
import math
import random
import struct

import pytest

from titan.errors import CodecError, ProtocolError
from titan.wire import codec
from titan.wire.codec import decode, encode

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
TEXTS = ["", "a", "Grüße, 世界 ✓", "a|b;c[d]e{f}", "line\nbreak\0nul", "😀" * 3]


def random_value(rng: random.Random, depth: int = 0) -> object:
    """A random encodable value; containers get rarer as depth grows."""
    kind = rng.randrange(12 if depth < 4 else 9)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, 1, -1, INT64_MIN, INT64_MAX, INT64_MIN - 1, INT64_MAX + 1])
    if kind == 2:
        return rng.randint(INT64_MIN, INT64_MAX)
    if kind == 3:
        return rng.choice([1, -1]) * rng.getrandbits(rng.randrange(64, 400))
    if kind == 4:
        return rng.choice([0.0, -0.0, math.inf, -math.inf, 5e-324, 1.7976931348623157e308])
    if kind == 5:
        return rng.uniform(-1e12, 1e12)
    if kind == 6:
        return rng.choice(TEXTS) + "".join(chr(rng.randrange(32, 0x3000)) for _ in range(rng.randrange(8)))
    if kind == 7:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(20)))
    if kind == 8:
        return math.nan
    if kind == 9:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(6))]
    if kind == 10:
        return tuple(random_value(rng, depth + 1) for _ in range(rng.randrange(4)))
    return {rng.choice(TEXTS) + str(i): random_value(rng, depth + 1) for i in range(rng.randrange(6))}


def assert_same(got: object, want: object) -> None:
    """Equality that treats NaN as equal, -0.0 as distinct and tuples as lists."""
    if isinstance(want, float):
        assert type(got) is float
        if math.isnan(want):
            assert math.isnan(got)
        else:
            assert got == want and math.copysign(1, got) == math.copysign(1, want)
    elif isinstance(want, (list, tuple)):
        assert type(got) is list and len(got) == len(want)
        for g, w in zip(got, want):
            assert_same(g, w)
    elif isinstance(want, dict):
        assert type(got) is dict and list(got) == list(want)
        for key in want:
            assert_same(got[key], want[key])
    else:
        assert type(got) is type(want) and got == want


# ---------------------------------------------------------------- round-trips

def test_random_nested_values_round_trip() -> None:
    rng = random.Random(20240611)
    for _ in range(500):
        value = random_value(rng)
        assert_same(decode(encode(value)), value)


@pytest.mark.parametrize(
    "value",
    [None, True, False, 0, INT64_MIN, INT64_MAX, INT64_MIN - 1, INT64_MAX + 1,
     -(1 << 64), 1 << 64, 10**100, -(10**100), 0.0, -0.0, math.inf, -math.inf, 1.5],
)
def test_scalars_round_trip(value: object) -> None:
    assert_same(decode(encode(value)), value)


def test_nan_round_trips() -> None:
    assert math.isnan(decode(encode(math.nan)))  # type: ignore[arg-type]


@pytest.mark.parametrize("text", TEXTS + ["[1, 2]", "a|b|c", "k;v;", "{\"json\": 1}"])
def test_strings_round_trip_unchanged(text: str) -> None:
    assert decode(encode(text)) == text
    assert decode(encode({text: [text]})) == {text: [text]}


def test_bytes_with_every_value_round_trip() -> None:
    data = bytes(range(256))
    for raw in (data, bytearray(data), memoryview(data)):
        got = decode(encode(raw))
        assert type(got) is bytes and got == data


def test_tuples_come_back_as_lists() -> None:
    assert decode(encode((1, ("a", (None,))))) == [1, ["a", [None]]]


def test_bool_is_not_encoded_as_int() -> None:
    assert encode(True) == b"\x02" and encode(False) == b"\x01"
    assert decode(encode([True, 1, False, 0])) == [True, 1, False, 0]
    assert [type(v) for v in decode(encode([True, 1]))] == [bool, int]  # type: ignore[union-attr]


def test_subclasses_encode_as_their_base_type() -> None:
    class Color(enum.IntEnum):
        RED = 3

    class Name(str):
        pass

    got = decode(encode({Name("k"): [Color.RED, Name("v")]}))
    assert got == {"k": [3, "v"]}
    assert type(got["k"][0]) is int and type(got["k"][1]) is str  # type: ignore[index]


def test_many_distinct_keys_round_trip_and_encode_identically_twice() -> None:
    body = {f"key-{i}": i for i in range(3000)}
    first = encode(body)
    assert encode(body) == first and decode(first) == body
    assert len(codec._KEY_CACHE) <= codec._KEY_CACHE_SIZE  # the key cache stays bounded


def test_decode_accepts_bytearray_and_memoryview() -> None:
    data = encode({"a": [1, "x"]})
    assert decode(bytearray(data)) == decode(memoryview(data)) == {"a": [1, "x"]}


# ---------------------------------------------------------------- exact layout

def test_layout_is_tag_then_big_endian_payload() -> None:
    assert encode(None) == b"\x00"
    assert encode(1) == b"\x03" + struct.pack(">q", 1)
    assert encode(1.0) == b"\x05" + struct.pack(">d", 1.0)
    assert encode("é") == b"\x06\x00\x00\x00\x02\xc3\xa9"
    assert encode(b"ab") == b"\x07\x00\x00\x00\x02ab"
    assert encode([None]) == b"\x08\x00\x00\x00\x01\x00"
    assert encode({"k": None}) == b"\x09\x00\x00\x00\x01\x06\x00\x00\x00\x01k\x00"


def test_big_ints_use_minimal_twos_complement() -> None:
    assert encode(INT64_MAX + 1) == b"\x04\x00\x00\x00\x09\x00\x80" + b"\x00" * 7
    assert encode(INT64_MIN - 1) == b"\x04\x00\x00\x00\x09\xff\x7f" + b"\xff" * 7


def test_tag_constants_match_layout() -> None:
    assert (codec.TAG_NONE, codec.TAG_FALSE, codec.TAG_TRUE, codec.TAG_INT, codec.TAG_BIGINT,
            codec.TAG_FLOAT, codec.TAG_STR, codec.TAG_BYTES, codec.TAG_LIST,
            codec.TAG_DICT) == tuple(range(10))


# The bodies every task sends: the encoder's inline paths must give the
# bytes the plain reading of the format gives.
PER_TASK_BODIES = [
    {"command": ["true"]},
    {"id": "t#123"},
    {"task": "fan#3/m123", "attempt": 1, "argv": ["true"], "run": "fan#3"},
    {"task": "t#123", "attempt": 1, "argv": ["true"]},
    {"task": "t#123", "attempt": 1, "exit_code": 0, "seq": 1234},
    {"kind": "result", "result": {"id": "t#123", "state": "SUCCEEDED", "exit_code": 0,
                                  "node": "w1", "attempts": 1}},
    {"upto": 1234},
]


def reference_encode(value: object) -> bytes:
    """The format as docs/protocol.md states it, one value at a time."""
    if value is None or isinstance(value, bool):
        return {None: b"\x00", False: b"\x01", True: b"\x02"}[value]
    if isinstance(value, int):
        if INT64_MIN <= value <= INT64_MAX:
            return b"\x03" + struct.pack(">q", value)
        size = (value.bit_length() + 8) // 8
        return b"\x04" + struct.pack(">I", size) + value.to_bytes(size, "big", signed=True)
    if isinstance(value, float):
        return b"\x05" + struct.pack(">d", value)
    if isinstance(value, str):
        data = value.encode("utf-8")
        return b"\x06" + struct.pack(">I", len(data)) + data
    if isinstance(value, (bytes, bytearray)):
        return b"\x07" + struct.pack(">I", len(value)) + bytes(value)
    if isinstance(value, (list, tuple)):
        return b"\x08" + struct.pack(">I", len(value)) + b"".join(map(reference_encode, value))
    assert isinstance(value, dict)
    return b"\x09" + struct.pack(">I", len(value)) + b"".join(
        reference_encode(k) + reference_encode(v) for k, v in value.items())


@pytest.mark.parametrize("body", PER_TASK_BODIES)
def test_per_task_bodies_encode_as_the_format_says_and_round_trip(body: dict) -> None:
    assert encode(body) == reference_encode(body)
    assert_same(decode(encode(body)), body)


def test_values_encode_the_same_alone_and_inside_containers() -> None:
    class Color(enum.IntEnum):
        RED = 3

    values = [None, True, False, 0, -1, INT64_MIN, INT64_MAX, INT64_MIN - 1, INT64_MAX + 1,
              1.5, "", "t#123", "Grüße", b"ab", bytearray(b"c"), [], ["true"], (1, "x"), {},
              {"a": [1]}, Color.RED, [[None]], {"n": {"m": 2**70}}]
    for value in values:
        alone = encode(value)
        assert alone == reference_encode(value)
        assert encode([value]) == b"\x08\x00\x00\x00\x01" + alone
        assert encode({"k": value}) == b"\x09\x00\x00\x00\x01" + encode("k") + alone
        assert encode({"k": [value]}) == encode({"k": (value,)})


def test_random_values_encode_as_the_format_says() -> None:
    rng = random.Random(20240612)
    for _ in range(300):
        value = random_value(rng)
        assert encode(value) == reference_encode(value)


# ---------------------------------------------------------------- encode errors

def test_unsupported_type_names_the_type_and_path() -> None:
    with pytest.raises(CodecError, match=r"unsupported type set .* at value\['env'\]\[1\]"):
        encode({"env": [1, {2}]})


def test_non_str_dict_key_names_the_key() -> None:
    with pytest.raises(CodecError, match=r"dict key 42 has type int; keys must be str") as info:
        encode({"outer": {42: "x"}})
    assert info.value.code == "bad_body"
    assert isinstance(info.value, ProtocolError)


def test_unencodable_str_is_an_error() -> None:
    with pytest.raises(CodecError, match=r"not valid Unicode .* at value\[0\]"):
        encode(["\ud800"])
    with pytest.raises(CodecError, match="not valid Unicode"):
        encode({"\udfff": 1})


def test_encode_depth_limit_and_cycles() -> None:
    nested: object = []
    for _ in range(3):
        nested = [nested]
    assert decode(encode(nested, max_depth=4), max_depth=4) == [[[[]]]]
    with pytest.raises(CodecError, match="max_depth"):
        encode(nested, max_depth=3)
    loop: list = []
    loop.append(loop)
    with pytest.raises(CodecError, match="max_depth"):
        encode(loop)


# ---------------------------------------------------------------- decode limits

def nest(levels: int) -> bytes:
    return b"\x08\x00\x00\x00\x01" * levels + b"\x00"


def test_decode_depth_limit() -> None:
    assert decode(nest(32)) is not None
    with pytest.raises(CodecError, match=r"list at byte 160 nests deeper than max_depth=32"):
        decode(nest(33))
    with pytest.raises(CodecError, match="max_depth=2"):
        decode(nest(3), max_depth=2)


def test_max_items_is_checked_per_container() -> None:
    body = encode(list(range(10)))
    assert len(decode(body, max_items=10)) == 10  # type: ignore[arg-type]
    with pytest.raises(CodecError, match=r"list at byte 0 claims 10 items, more than max_items=9"):
        decode(body, max_items=9)


def test_huge_count_fails_fast_without_allocating() -> None:
    body = b"\x08\xff\xff\xff\xff" + b"\x00" * 5  # 4 billion items claimed in 10 bytes
    with pytest.raises(CodecError, match=r"claims 4294967295 items"):
        decode(body, max_items=2**32)
    dict_body = b"\x09\x00\x00\x00\x02" + encode("k") + b"\x00"  # 2 pairs, room for 1
    with pytest.raises(CodecError, match=r"dict at byte 0 claims 2 items but only 7 bytes remain"):
        decode(dict_body)


@pytest.mark.parametrize(
    "body, kind",
    [(b"\x06\x00\x00\x00\x05abc", "str"), (b"\x07\xff\xff\xff\xffab", "bytes"),
     (b"\x04\x00\x00\x00\x09\x01", "big int"),
     (b"\x09\x00\x00\x00\x01\x06\x00\x00\x01\x00k\x00", "dict key"),
     (b"\x09\x00\x00\x00\x01\x06\x00\x00\x00\x01k\x06\x00\x00\x00\x09", "str"),
     (b"\x08\x00\x00\x00\x01\x06\x00\x00\x00\x09ab", "str")],
)
def test_length_beyond_remaining_bytes(body: bytes, kind: str) -> None:
    with pytest.raises(CodecError, match=rf"{kind} at byte \d+ claims \d+ bytes but only \d+ remain"):
        decode(body)


@pytest.mark.parametrize(
    "body",
    [b"\x03\x00\x00", b"\x05\x00", b"\x06\x00", b"\x08\x00\x00\x00\x02\x00",
     b"\x09\x00\x00\x00\x01\x06\x00\x00\x00\x01k\x00"[:-1], encode([1, 2])[:-3]],
)
def test_truncated_values(body: bytes) -> None:
    with pytest.raises(CodecError, match=r"byte \d+"):
        decode(body)


def test_unknown_tag_names_tag_and_offset() -> None:
    body = b"\x08\x00\x00\x00\x02" + encode(1) + b"\x7f"
    with pytest.raises(CodecError, match=r"^unknown type tag 0x7f at byte 14$"):
        decode(body)


def test_invalid_utf8_names_offset() -> None:
    body = b"\x08\x00\x00\x00\x01\x06\x00\x00\x00\x03ab\xff"
    with pytest.raises(CodecError, match=r"invalid UTF-8 in str at byte 12"):
        decode(body)


def test_trailing_bytes_are_rejected() -> None:
    with pytest.raises(CodecError, match=r"2 trailing bytes after the value, at byte 1 of 3"):
        decode(b"\x00\x00\x00")


def test_empty_input_is_rejected() -> None:
    with pytest.raises(CodecError, match="empty body"):
        decode(b"")


def test_non_str_dict_key_on_decode() -> None:
    body = b"\x09\x00\x00\x00\x01" + encode(7) + b"\x00"
    with pytest.raises(CodecError, match=r"dict key at byte 5 has type tag 0x03; keys must be str"):
        decode(body)


def test_random_corruption_only_raises_codec_error() -> None:
    rng = random.Random(7)
    for _ in range(300):
        body = bytearray(encode(random_value(rng)))
        for _ in range(rng.randrange(1, 4)):
            body[rng.randrange(len(body))] = rng.randrange(256)
        cut = bytes(body[: rng.randrange(len(body) + 1)]) if rng.random() < 0.3 else bytes(body)
        try:
            decode(cut)
        except CodecError:
            pass


# ---------------------------------------------------------------- micro check

TYPICAL_BODY = {"id": "t-123", "cmd": ["sh", "-c", "echo hi"], "env": {"A": "1"}, "timeout_s": 60.0}


def bench_small_dict(number: int = 50_000, repeat: int = 5) -> float:
    """Best-of-``repeat`` microseconds for one encode+decode of TYPICAL_BODY."""
    import timeit

    def once() -> object:
        return decode(encode(TYPICAL_BODY))

    assert once() == TYPICAL_BODY
    return min(timeit.repeat(once, number=number, repeat=repeat)) / number * 1e6


if __name__ == "__main__":
    micros = bench_small_dict()
    print(f"encode+decode of a typical small dict: {micros:.2f} us (budget: well under 20 us)")
