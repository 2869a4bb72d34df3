"""Unit tests for titan.core.convert: every converter, its accepted forms and every error."""
from __future__ import annotations

import sys
import types
from typing import Any, Callable

import pytest

from titan.core import convert
from titan.core.convert import ConvertError
from titan.errors import UsageError


def rejects(converter: Callable[[str], Any], text: str, *fragments: str, bad: str = "") -> str:
    """Assert that ``converter(text)`` raises ConvertError carrying the bad value (``bad``, by
    default all of ``text``) and whose message holds every one of ``fragments``."""
    with pytest.raises(ConvertError) as info:
        converter(text)
    message = str(info.value)
    assert info.value.value == (bad or text)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_convert_error_is_a_usage_error() -> None:
    assert issubclass(ConvertError, UsageError)


# ----- durations -----------------------------------------------------------------------
@pytest.mark.parametrize("text, seconds", [
    ("90s", 90.0), ("10m", 600.0), ("1h30m", 5400.0), ("2d", 172800.0), ("45", 45.0), ("0", 0.0),
    ("500ms", 0.5), ("1.5s", 1.5), ("0.25", 0.25), (" 1h 30m ", 5400.0), ("1d2h3m4s5ms", 93784.005),
    ("10M", 600.0), ("0s", 0.0),
])
def test_duration_accepts(text: str, seconds: float) -> None:
    assert convert.duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10x", "-5s", "s", "1.5.2s", "ten minutes", "1h30", "inf", "nan", "1e3",
                                  "5 s s"])
def test_duration_rejects(text: str) -> None:
    rejects(convert.duration, text, f"bad duration {text!r}", "'90s', '10m', '1h30m'")


def test_duration_rejects_a_number_too_large_to_represent() -> None:
    rejects(convert.duration, "9" * 400 + "s", "finite")


def test_positive_duration() -> None:
    assert convert.positive_duration("5s") == 5.0
    rejects(convert.positive_duration, "0s", "bad duration '0s'", "more than zero")
    rejects(convert.positive_duration, "soon", "bad duration 'soon'")


# ----- sizes ---------------------------------------------------------------------------
@pytest.mark.parametrize("text, size", [
    ("512", 512), ("512b", 512), ("512k", 512 * 1024), ("512K", 512 * 1024), ("64MiB", 64 * 1024 ** 2),
    ("10MB", 10_000_000), ("1kB", 1000), ("2G", 2 * 1024 ** 3), ("1GiB", 1024 ** 3), ("1gb", 10 ** 9),
    ("1T", 1024 ** 4), ("1.5KiB", 1536), ("3 MiB", 3 * 1024 ** 2),
])
def test_size_accepts(text: str, size: int) -> None:
    assert convert.size(text) == size


@pytest.mark.parametrize("text", ["", "MiB", "10 parsecs", "-1k", "1.2.3M", "10XB"])
def test_size_rejects(text: str) -> None:
    rejects(convert.size, text, f"bad size {text!r}", "'64MiB'")


# ----- names and lists -----------------------------------------------------------------
@pytest.mark.parametrize("text", ["extract", "nightly-etl", "a.b_c-d", "A1", "x" * 64, " padded "])
def test_name_accepts(text: str) -> None:
    assert convert.name(text) == text.strip()


@pytest.mark.parametrize("text", ["", "-lead", ".hidden", "has space", "a/b", "job#1", "x" * 65, "ünï"])
def test_name_rejects(text: str) -> None:
    rejects(lambda t: convert.name(t, what="task name"), text, f"bad task name {text!r}",
            "letters, digits, '_', '.', '-'", "at most 64")


def test_names_keep_order_and_drop_repeats() -> None:
    assert convert.names("b, a  c,,a\n d") == ("b", "a", "c", "d")
    assert convert.names("") == ()
    assert convert.names("  ,  ") == ()
    rejects(lambda t: convert.names(t, what="task name"), "a, b!", "bad task name 'b!'", bad="b!")


def test_tags() -> None:
    assert convert.tags("gpu, highmem gpu") == frozenset({"gpu", "highmem"})
    assert convert.tags("") == frozenset()
    rejects(convert.tags, "gpu, cuda=12", "bad tag 'cuda=12'", bad="cuda=12")


def test_node_name() -> None:
    assert convert.node_name(" worker-1 ") == "worker-1"
    assert convert.node_name("host.example.com-4242") == "host.example.com-4242"
    for bad in ("", "two words", "x" * 256):
        rejects(convert.node_name, bad, f"bad node name {bad!r}", "without spaces")


# ----- numbers ---------------------------------------------------------------------------
def test_integer() -> None:
    assert convert.integer("42") == 42
    assert convert.integer(" -3 ", minimum=-5) == -3
    assert convert.integer("+7") == 7
    assert convert.integer("1000", minimum=0, maximum=1000) == 1000


@pytest.mark.parametrize("text, bounds, expected", [
    ("3.5", {}, "a whole number"),
    ("many", {"minimum": 0, "maximum": 10}, "a whole number from 0 to 10"),
    ("11", {"minimum": 0, "maximum": 10}, "a whole number from 0 to 10"),
    ("-1", {"minimum": 0}, "a whole number of at least 0"),
    ("6", {"maximum": 5}, "a whole number of at most 5"),
    ("", {}, "a whole number"),
    ("9" * 30, {}, "a whole number"),
])
def test_integer_rejects(text: str, bounds: dict, expected: str) -> None:
    rejects(lambda t: convert.integer(t, **bounds), text, f"bad number {text!r}: expected {expected}")


def test_port() -> None:
    assert convert.port("8000") == 8000
    assert convert.port("AUTO") == convert.PORT_AUTO == 0
    assert convert.port("65535") == 65535
    rejects(convert.port, "0", "bad port '0'", "write 'auto'")
    for bad in ("65536", "http", "-1", "", "80.5"):
        rejects(convert.port, bad, f"bad port {bad!r}", "1 to 65535, or 'auto'")


# ----- words -------------------------------------------------------------------------------
def test_command_is_kept_literally() -> None:
    text = 'python3 extract.py --day "$(date +%F)" 100% $HOME %(x)s'
    assert convert.command(text) == text
    assert convert.command("line one\nline two") == "line one\nline two"


def test_command_rejects_empty_and_nul() -> None:
    rejects(convert.command, "", "empty command")
    rejects(convert.command, "   ", "empty command")
    rejects(convert.command, "echo a\0b", "NUL byte", "'echo a\\x00b'")


@pytest.mark.parametrize("text, value", [("yes", True), ("On", True), ("1", True), ("TRUE", True),
                                         ("no", False), ("off", False), ("0", False), ("False", False)])
def test_boolean(text: str, value: bool) -> None:
    assert convert.boolean(text) is value


def test_boolean_rejects() -> None:
    rejects(convert.boolean, "maybe", "bad boolean 'maybe'", "yes or no")


@pytest.mark.parametrize("converter, good, bad, expected, hint", [
    (convert.restart_policy, "On-Failure", "on_failure", "always | on-failure | never", "'on-failure'"),
    (convert.overlap_policy, "queue", "skipp", "skip | queue | allow", "'skip'"),
    (convert.catchup_policy, "ALL", "latests", "none | latest | all", "'latest'"),
])
def test_policies(converter: Callable[[str], str], good: str, bad: str, expected: str, hint: str) -> None:
    assert converter(good) == good.lower()
    message = rejects(converter, bad, repr(bad), expected)
    assert message.endswith(f"did you mean {hint}?")


def test_choice_without_a_close_match_has_no_hint() -> None:
    message = rejects(convert.restart_policy, "sometimes", "bad restart policy 'sometimes'")
    assert "did you mean" not in message


@pytest.mark.parametrize("text, name", [("TERM", "SIGTERM"), ("SIGTERM", "SIGTERM"), ("sigterm", "SIGTERM"),
                                        ("15", "SIGTERM"), ("9", "SIGKILL"), ("int", "SIGINT"),
                                        ("USR1", "SIGUSR1"), (" hup ", "SIGHUP"), ("2", "SIGINT")])
def test_signal_name(text: str, name: str) -> None:
    assert convert.signal_name(text) == name


def test_signal_name_rejects() -> None:
    message = rejects(convert.signal_name, "SIGTREM", "bad signal 'SIGTREM'", "TERM")
    assert message.endswith("did you mean 'TERM'?")
    rejects(convert.signal_name, "10", "bad signal '10'", "use a name such as 'TERM'")
    rejects(convert.signal_name, "", "bad signal ''")
    rejects(convert.signal_name, "STOP", "bad signal 'STOP'")


def test_env_name_and_value() -> None:
    assert convert.env_name("PATH") == "PATH"
    assert convert.env_name("_x1") == "_x1"
    for bad in ("", "1X", "A-B", "A=B", "A B"):
        rejects(convert.env_name, bad, f"bad environment variable name {bad!r}")
    assert convert.env_value(" $HOME %s ") == " $HOME %s "
    rejects(convert.env_value, "a\0b", "NUL byte")


# ----- paths, URLs, zones, schedules ---------------------------------------------------------
@pytest.mark.parametrize("text, path", [
    ("extract.py", "extract.py"), ("./lib//util.py", "lib/util.py"), (" lib/./x.py ", "lib/x.py"),
    ("a..b/c", "a..b/c"), (".hidden", ".hidden"),
])
def test_relative_path_accepts(text: str, path: str) -> None:
    assert convert.relative_path(text) == path


@pytest.mark.parametrize("text, reason", [
    ("/etc/passwd", "absolute paths are refused"), ("../x.py", "'..' would leave the workspace"),
    ("lib/../../x", "'..' would leave the workspace"), ("a/..", "'..'"), ("~/x.py", "'~' is not expanded"),
    ("lib/*.py", "globs are not expanded"), ("x?.py", "globs"), ("[ab].py", "globs"),
    ("lib\\x.py", "use '/'"), ("lib/", "directory"), (".", "names no file"), ("", "names no file"),
    ("a\0b", "NUL byte"),
])
def test_relative_path_rejects(text: str, reason: str) -> None:
    rejects(convert.relative_path, text, f"bad file path {text!r}", reason)


def test_path_list() -> None:
    assert convert.path_list("extract.py, lib/a.py ./extract.py\nlib/b.py") == ("extract.py", "lib/a.py",
                                                                               "lib/b.py")
    assert convert.path_list("") == ()
    rejects(convert.path_list, "ok.py, ../secret", "bad file path '../secret'", bad="../secret")


def test_path_list_names_every_bad_path() -> None:
    with pytest.raises(ConvertError) as info:
        convert.path_list("../a, ok.py, /etc/passwd dir/")
    assert info.value.messages == [
        "bad file path '../a': '..' would leave the workspace",
        "bad file path '/etc/passwd': absolute paths are refused; give a path relative to the job file",
        "bad file path 'dir/': that is a directory; list the files in it"]


@pytest.mark.parametrize("text", ["tcp", "TCP", "http://127.0.0.1:$PORT/", "https://example.com/health?x=1",
                                  "http://[::1]:8000/"])
def test_health_accepts(text: str) -> None:
    assert convert.health(text) == ("tcp" if text.lower() == "tcp" else text)


@pytest.mark.parametrize("text", ["", "udp", "ftp://x/", "http://", "127.0.0.1:8000", "http://a b/",
                                  "http://[::1/"])
def test_health_rejects(text: str) -> None:
    rejects(convert.health, text, f"bad health check {text!r}", "'tcp' or an http:// or https:// URL")


def test_time_zone() -> None:
    assert convert.time_zone("Europe/Berlin") == "Europe/Berlin"
    assert convert.time_zone(" UTC ") == "UTC"
    assert convert.time_zone("America/New_York") == "America/New_York"


@pytest.mark.parametrize("text", ["Mars/Olympus", "", "../etc/passwd", "/etc/localtime", "Europe"])
def test_time_zone_rejects(text: str) -> None:
    rejects(convert.time_zone, text, f"unknown time zone {text!r}", "IANA name")


def test_time_zone_suggests_the_right_case() -> None:
    message = rejects(convert.time_zone, "europe/berlin")
    assert message.endswith("did you mean 'Europe/Berlin'?")


def test_suggest_and_closest() -> None:
    assert convert.closest("retires", ["retries", "timeout"]) == "retries"
    assert convert.closest("zzz", ["retries"]) is None
    assert convert.suggest("RETRIES", ["retries"]) == "; did you mean 'retries'?"
    assert convert.suggest("zzz", ["retries"]) == ""


# ----- schedules: with and without titan.core.cron ------------------------------------------------
@pytest.fixture
def no_cron(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import titan.core.cron`` fail, as before that module existed."""
    monkeypatch.setitem(sys.modules, "titan.core.cron", None)


@pytest.fixture
def fake_cron(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A stand-in titan.core.cron whose parse accepts only '0 2 * * *' and '@daily'."""
    module = types.ModuleType("titan.core.cron")

    class CronError(UsageError):
        pass

    def parse(expr: str) -> object:
        if expr not in ("0 2 * * *", "@daily"):
            raise CronError("minute field: 61 is out of range 0-59")
        return object()

    module.CronError, module.parse = CronError, parse  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "titan.core.cron", module)
    return module


@pytest.mark.parametrize("text, value", [("0 2 * * *", "0 2 * * *"), ("  */5  1-3 * JAN,feb mon-fri ",
                                                                     "*/5 1-3 * JAN,feb mon-fri"),
                                         ("@daily", "@daily"), ("@Hourly", "@hourly")])
def test_cron_shape_without_the_cron_module(no_cron: None, text: str, value: str) -> None:
    assert convert.cron_expression(text) == value


@pytest.mark.parametrize("text, fragment", [("0 2 * *", "5 fields"), ("0 2 * * * *", "5 fields"),
                                            ("", "5 fields"), ("0 2 * * $", "5 fields"),
                                            ("@reboot", "@yearly, @annually"), ("@dayly", "did you mean '@daily'?")])
def test_cron_shape_rejects_without_the_cron_module(no_cron: None, text: str, fragment: str) -> None:
    rejects(convert.cron_expression, text, f"bad schedule {text!r}", fragment)


def test_cron_expression_delegates_to_the_cron_module(fake_cron: types.ModuleType) -> None:
    assert convert.cron_expression(" 0  2 * * * ") == "0 2 * * *"
    rejects(convert.cron_expression, "61 2 * * *", "bad schedule '61 2 * * *'", "61 is out of range 0-59")
