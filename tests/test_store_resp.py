"""RESP: the incremental request parser, reply encoding, and scan_commands on
AOF contents (torn tails versus corruption), plus the glob matcher.
"""
from __future__ import annotations

import random
import time
from typing import List, Optional

import pytest

from titan.store.glob import compile_glob, glob_match
from titan.store.reply import ErrorReply, MapReply, PushReply, SetReply, SimpleString
from titan.store.resp import (
    RespError,
    RespParser,
    ScanResult,
    encode_command,
    encode_reply,
    scan_commands,
)

STREAM_COMMANDS: List[List[bytes]] = [
    [b"SET", b"key", b"value"],
    [b"SET", b"bin", b"\r\n\x00\xff*3\r\n$1\r\n"],  # a payload that looks like RESP
    [b"GET", "ключ".encode()],
    [b"SET", b"empty", b""],
    [b"SADD", b"s"] + [b"m%d" % i for i in range(50)],
    [b"SET", b"big", b"x" * 100_000],
    [b"PING"],
]


def feed_all(parser: RespParser, data: bytes, step: int) -> List[List[bytes]]:
    out: List[List[bytes]] = []
    for i in range(0, len(data), step):
        out.extend(parser.feed(data[i : i + step]))
    return out


# -- the request parser ----------------------------------------------------------------


def test_one_command_and_a_pipeline() -> None:
    parser = RespParser()
    assert parser.feed(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n") == [[b"GET", b"k"]]
    pipeline = b"".join(encode_command(c) for c in STREAM_COMMANDS)
    assert parser.feed(pipeline) == STREAM_COMMANDS
    assert parser.buffered_bytes == 0


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64, 4096])
def test_fed_in_pieces_equals_fed_at_once(step: int) -> None:
    data = b"".join(encode_command(c) for c in STREAM_COMMANDS) + b"PING\r\nSET a b\r\n"
    expected = STREAM_COMMANDS + [[b"PING"], [b"SET", b"a", b"b"]]
    assert RespParser().feed(data) == expected
    assert feed_all(RespParser(), data, step) == expected


def test_many_pipelined_commands_cross_the_fast_path_window() -> None:
    rng = random.Random(7)
    commands = []
    for i in range(8_000):
        value = rng.choice([b"v%d" % i, b"a\r\nb", b"", b"\r\n", b"x" * rng.randrange(300)])
        commands.append(rng.choice([[b"SET", b"k%d" % i, value], [b"INCR", b"n"], [b"MSET", b"a", value, b"b", b"c"]]))
    data = b"".join(encode_command(c) for c in commands)
    assert RespParser().feed(data) == commands
    assert feed_all(RespParser(), data, 65536) == commands
    assert feed_all(RespParser(), data, 1000) == commands


def test_inline_commands() -> None:
    parser = RespParser()
    assert parser.feed(b"SET a b\r\n") == [[b"SET", b"a", b"b"]]
    assert parser.feed(b"PING\n\r\n  \r\nGET   a\r\n") == [[b"PING"], [b"GET", b"a"]]  # empty lines skipped
    assert parser.feed(b'SET k "hello world\\n" \'it\\\'s\'\r\n') == [[b"SET", b"k", b"hello world\n", b"it's"]]
    assert parser.feed(b'SET k "\\x41\\x42"\r\n') == [[b"SET", b"k", b"AB"]]
    with pytest.raises(RespError, match="unbalanced quotes"):
        RespParser().feed(b'SET k "oops\r\n')


def test_empty_arrays_are_skipped() -> None:
    assert RespParser().feed(b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n") == [[b"PING"]]


def test_a_big_bulk_arriving_slowly_is_not_reparsed() -> None:
    parser = RespParser()
    header = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4000000\r\n"
    assert parser.feed(header) == []
    chunk = b"z" * 1000
    started = time.perf_counter()
    for _ in range(3999):
        assert parser.feed(chunk) == []
    assert parser.feed(chunk + b"\r\n") == [[b"SET", b"k", b"z" * 4_000_000]]
    assert time.perf_counter() - started < 1.0  # re-joining the buffer each time: ~8 GB copied


@pytest.mark.parametrize(
    "data, message",
    [
        (b"*x\r\n", "Protocol error: invalid multibulk length"),
        (b"*-5\r\n", "Protocol error: invalid multibulk length"),
        (b"*+1\r\n", "Protocol error: invalid multibulk length"),
        (b"*01\r\n", "Protocol error: invalid multibulk length"),
        (b"*99999999\r\n", "Protocol error: invalid multibulk length"),
        (b"*1\r\n$-1\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n$x\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n$ 3\r\nabc\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n$4294967296\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\nfoo\r\n", "Protocol error: expected '$', got 'f'"),
        (b"*1\r\n$3\r\nabcXY", "Protocol error: expected CRLF after bulk data"),
        (b"*1\r\n$3\r\nabcX", "Protocol error: expected CRLF after bulk data"),  # wrong before complete
        (b"*1\r\n$3\r\nabc\rX", "Protocol error: expected CRLF after bulk data"),
        (b"*2\r\n$3\nGET\r\n", "Protocol error: invalid bulk length"),
        (b"*1" + b"1" * 40, "Protocol error: too big mbulk count string"),
        (b"*1\r\n$" + b"9" * 40, "Protocol error: too big bulk count string"),
        (b"\x00\xff\xfe" * 30_000, "Protocol error: too big inline request"),
    ],
)
def test_malformed_input_is_refused(data: bytes, message: str) -> None:
    parser = RespParser()
    with pytest.raises(RespError) as caught:
        feed_all(parser, data, len(data))
    assert caught.value.message == message
    assert parser.buffered_bytes == 0
    with pytest.raises(RespError):  # a broken stream stays broken
        parser.feed(b"*1\r\n$4\r\nPING\r\n")


@pytest.mark.parametrize("step", [1, 5])
def test_malformed_input_fed_bytewise_is_refused_too(step: int) -> None:
    with pytest.raises(RespError, match="invalid bulk length"):
        feed_all(RespParser(), b"*2\r\n$3\r\nGET\r\n$12x\r\n", step)


def test_a_huge_bulk_length_is_refused_before_buffering() -> None:
    parser = RespParser()
    with pytest.raises(RespError, match="invalid bulk length"):
        parser.feed(b"*2\r\n$3\r\nSET\r\n$4294967296\r\n")
    small = RespParser(max_bulk_bytes=10, max_array_len=3, max_inline_bytes=16)
    assert small.feed(b"*1\r\n$10\r\n0123456789\r\n") == [[b"0123456789"]]
    with pytest.raises(RespError, match="invalid bulk length"):
        small.feed(b"*1\r\n$11\r\n")
    with pytest.raises(RespError, match="invalid multibulk length"):
        RespParser(max_array_len=3).feed(b"*4\r\n")
    with pytest.raises(RespError, match="too big inline request"):
        RespParser(max_inline_bytes=16).feed(b"GET " + b"k" * 20)


def test_a_legal_big_bulk_waits_for_its_bytes() -> None:
    parser = RespParser()
    assert parser.feed(b"*1\r\n$536870912\r\nabc") == []  # 512 MiB announced, 3 bytes sent
    assert parser.buffered_bytes < 100


# -- encoding -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply, resp2, resp3",
    [
        (None, b"$-1\r\n", b"_\r\n"),
        (42, b":42\r\n", b":42\r\n"),
        (-1, b":-1\r\n", b":-1\r\n"),
        (True, b":1\r\n", b"#t\r\n"),
        (b"hi", b"$2\r\nhi\r\n", b"$2\r\nhi\r\n"),
        (b"", b"$0\r\n\r\n", b"$0\r\n\r\n"),
        (SimpleString(b"OK"), b"+OK\r\n", b"+OK\r\n"),
        (ErrorReply("ERR bad\r\nthing"), b"-ERR bad  thing\r\n", b"-ERR bad  thing\r\n"),
        ([b"a", None, 1, [b"b"]], b"*4\r\n$1\r\na\r\n$-1\r\n:1\r\n*1\r\n$1\r\nb\r\n",
         b"*4\r\n$1\r\na\r\n_\r\n:1\r\n*1\r\n$1\r\nb\r\n"),
        (MapReply([b"f", b"v"]), b"*2\r\n$1\r\nf\r\n$1\r\nv\r\n", b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n"),
        ({b"f": 1}, b"*2\r\n$1\r\nf\r\n:1\r\n", b"%1\r\n$1\r\nf\r\n:1\r\n"),
        (SetReply([b"m"]), b"*1\r\n$1\r\nm\r\n", b"~1\r\n$1\r\nm\r\n"),
        (PushReply([b"message", b"c", b"m"]), b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n",
         b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n"),
        ([], b"*0\r\n", b"*0\r\n"),
        (1.5, b"$3\r\n1.5\r\n", b",1.5\r\n"),
        ("ü", b"$2\r\n\xc3\xbc\r\n", b"$2\r\n\xc3\xbc\r\n"),
    ],
)
def test_encode_reply(reply: object, resp2: bytes, resp3: bytes) -> None:
    assert encode_reply(reply) == resp2
    assert encode_reply(reply, resp3=True) == resp3


def test_encode_command_round_trips() -> None:
    command = [b"SET", "ключ".encode(), b"\r\n\x00"]
    encoded = encode_command(command)
    assert encoded == b"*3\r\n$3\r\nSET\r\n$8\r\n" + "ключ".encode() + b"\r\n$3\r\n\r\n\x00\r\n"
    assert RespParser().feed(encoded) == [command]


# -- scan_commands on AOF contents --------------------------------------------------------


def aof_of(commands: List[List[bytes]]) -> bytes:
    return b"".join(encode_command(c) for c in commands)


def test_scan_a_clean_file() -> None:
    data = aof_of(STREAM_COMMANDS)
    result = scan_commands(data)
    assert result == ScanResult(STREAM_COMMANDS, len(data), None)
    commands, end, error = result  # unpacks as the three fields
    assert (commands, end, error) == (STREAM_COMMANDS, len(data), None)
    assert not result.truncated
    assert scan_commands(b"") == ScanResult([], 0, None)


def test_torn_tail_at_every_offset_of_the_last_command() -> None:
    body = aof_of(STREAM_COMMANDS[:-1])
    last = encode_command([b"SET", b"tail", b"v\r\nalue", b"PXAT", b"1700000000000"])
    for cut in range(1, len(last)):
        result = scan_commands(body + last[:cut])
        assert result.truncated, cut
        assert result.error is None
        assert result.end == len(body)
        assert result.commands == STREAM_COMMANDS[:-1]


def test_corruption_in_the_middle_is_reported_with_its_offset() -> None:
    head = aof_of(STREAM_COMMANDS[:3])
    tail = aof_of(STREAM_COMMANDS[3:])
    bad = encode_command([b"SET", b"k", b"v"]).replace(b"$1\r\nk", b"$2\r\nk")  # wrong length
    result = scan_commands(head + bad + tail)
    assert not result.truncated
    assert result.end == len(head)
    assert result.commands == STREAM_COMMANDS[:3]
    assert result.error == "Protocol error: expected CRLF after bulk data"
    assert result.error_offset is not None and len(head) < result.error_offset < len(head) + len(bad)
    torn_wrongly = scan_commands(head + b"*1\r\n$3\r\nabcX")
    assert torn_wrongly.error == "Protocol error: expected CRLF after bulk data" and not torn_wrongly.truncated
    garbage = scan_commands(head + b"GARBAGE" + tail)
    assert garbage.error == "Protocol error: expected '*', got 'G'"
    assert (garbage.end, garbage.error_offset) == (len(head), len(head))


def test_scan_in_slices_with_limit() -> None:
    commands = [[b"SET", b"k%d" % i, b"v"] for i in range(1000)] + [[b"DEL", b"a\r\nb"]]
    data = aof_of(commands)
    got: List[List[bytes]] = []
    start = 0
    while start < len(data):
        result = scan_commands(data, start, limit=97)
        assert result.error is None and not result.truncated
        assert len(result.commands) <= 97
        got.extend(result.commands)
        start = result.end
    assert got == commands


def test_scan_equals_the_incremental_parser_on_random_input() -> None:
    rng = random.Random(3)
    for trial in range(40):
        commands = [
            [rng.choice([b"SET", b"SADD", b"DEL"])] + [bytes(rng.randrange(256) for _ in range(rng.randrange(6)))
                                                       for _ in range(rng.randrange(1, 5))]
            for _ in range(rng.randrange(1, 200))
        ]
        data = bytearray(aof_of(commands))
        damaged: Optional[int] = None
        if trial % 2:
            damaged = rng.randrange(len(data))
            data[damaged] = rng.choice(b"*$\r\nx0")
        result = scan_commands(bytes(data))
        parser = RespParser()
        reference: List[List[bytes]] = []
        failed = False
        for i in range(len(data)):  # bytewise: the exact parser, never the fast path
            try:
                reference.extend(parser.feed(bytes(data[i : i + 1])))
            except RespError:
                failed = True
                break
        if damaged is None:
            assert result.commands == commands and result.end == len(data)
        assert result.commands == reference[: len(result.commands)]
        if result.error is None and not result.truncated:
            assert reference == result.commands and not failed


def test_scan_speed_is_reasonable() -> None:
    commands = [[b"SET", b"key:%d" % i, b"value:%d" % i] for i in range(50_000)]
    data = aof_of(commands)
    started = time.perf_counter()
    result = scan_commands(data)
    elapsed = time.perf_counter() - started
    assert result.commands == commands
    assert elapsed < 3.0, f"50k commands took {elapsed:.2f}s"  # linear: ~0.3 s


# -- glob ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern, subject, matches",
    [
        (b"*", b"", True),
        (b"*", b"anything", True),
        (b"h?llo", b"hello", True),
        (b"h?llo", b"hllo", False),
        (b"h*llo", b"heeeello", True),
        (b"h*llo", b"hllo", True),
        (b"h[ae]llo", b"hallo", True),
        (b"h[ae]llo", b"hillo", False),
        (b"h[^e]llo", b"hallo", True),
        (b"h[^e]llo", b"hello", False),
        (b"h[a-b]llo", b"hbllo", True),
        (b"h[z-a]llo", b"hmllo", True),  # reversed range
        (b"h\\*llo", b"h*llo", True),
        (b"h\\*llo", b"hello", False),
        (b"[\\]]", b"]", True),
        (b"[]", b"x", False),
        (b"a[bc", b"ab", True),  # an unclosed class runs to the end
        (b"a\\", b"a\\", True),  # a trailing backslash is literal
        (b"*.txt", b"notes.txt", True),
        (b"*.txt", b"notes.txt.bak", False),
        (b"a*b*c", b"a--b--c", True),
        (b"a*b*c", b"a--c--b", False),
        (b"*a*", b"bab", True),
        (b"ab*ba", b"aba", False),
        (b"user:*:name", "user:ü:name".encode(), True),
        (b"\xff?", b"\xff\x00", True),
        (b"plain", b"plain", True),
        (b"plain", b"plainer", False),
    ],
)
def test_glob(pattern: bytes, subject: bytes, matches: bool) -> None:
    assert glob_match(pattern, subject) is matches


def test_glob_does_not_backtrack_exponentially() -> None:
    pattern = compile_glob(b"*a*a*a*a*a*a*a*a*a*a*b")
    started = time.perf_counter()
    assert not pattern.match(b"a" * 5000)
    assert time.perf_counter() - started < 2.0  # backtracking would take ages
