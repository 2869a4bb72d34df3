"""Bad option values are refused before anything starts: one line naming the option, exit 2."""
from __future__ import annotations

from pathlib import Path
from typing import List

import pytest

from titan.cli import EXIT_USAGE, main
from titan.cli.parser import build_parser


@pytest.mark.parametrize("argv, message", [
    (["master", "--heartbeat-timeout", "-1"], "argument --heartbeat-timeout: must be greater than 0, not -1"),
    (["master", "--handshake-timeout", "0"], "argument --handshake-timeout: must be greater than 0, not 0"),
    (["master", "--lost-grace", "-2"], "argument --lost-grace: must be at least 0, not -2"),
    (["master", "--max-connections", "0"], "argument --max-connections: must be at least 1, not 0"),
    (["master", "--max-frame-bytes", "0"], "argument --max-frame-bytes: must be at least 65536, not 0"),
    (["master", "--log-max-bytes", "-5"], "argument --log-max-bytes: must be at least 0, not -5"),
    (["master", "--log-max-bytes", "lots"], "argument --log-max-bytes: 'lots' is not a whole number"),
    (["worker", "--slots", "0"], "argument --slots: must be at least 1, not 0"),
    (["worker", "--heartbeat-interval", "0"], "argument --heartbeat-interval: must be greater than 0, not 0"),
    (["worker", "--ahead", "-1"], "argument --ahead: must be at least 0, not -1"),
    (["up", "--workers", "-1"], "argument --workers: must be at least 0, not -1"),
    (["tasks", "--limit", "0"], "argument --limit: must be at least 1, not 0"),
    (["tasks", "--state", "bogus"], "argument --state: invalid choice: 'BOGUS' (choose from 'WAITING', 'QUEUED', "
                                    "'RUNNING', 'SUCCEEDED', 'FAILED', 'DEAD', 'CANCELLED', 'SKIPPED')"),
])
def test_an_option_out_of_range_is_refused_by_name(capsys: pytest.CaptureFixture, argv: List[str],
                                                   message: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == EXIT_USAGE
    assert capsys.readouterr().err.splitlines()[-1] == f"titan {argv[0]}: error: {message}"


@pytest.mark.parametrize("argv, line", [
    (["master", "--data", "DATA", "--bind", "127.0.0.1:99999"],
     "titan: --bind: bad port '99999' in address '127.0.0.1:99999': use HOST:PORT, e.g. 127.0.0.1:9090"),
    (["worker", "--data", "DATA", "--master", "127.0.0.1:http"],
     "titan: --master: bad port 'http' in address '127.0.0.1:http': use HOST:PORT, e.g. 127.0.0.1:9090"),
    (["up", "--data", "DATA", "--workers", "0", "--", "echo", "hi"],
     "titan: --workers 0 leaves nothing to run the command or job: give --workers 1 or more"),
])
def test_a_bad_address_or_an_empty_cluster_is_one_line_and_starts_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture, argv: List[str], line: str) -> None:
    data = tmp_path / "data"
    assert main([str(data) if a == "DATA" else a for a in argv]) == EXIT_USAGE
    assert capsys.readouterr().err == line + "\n"
    assert not data.exists()


def test_the_global_options_follow_nested_verbs_too() -> None:
    parser = build_parser()
    for argv in (["store", "check", "DIR", "--json"], ["kv", "keys", "--json"], ["jobs", "rm", "x", "--json"],
                 ["cron", "next", "@daily", "--json"], ["tasks", "--state", "dead", "--json"]):
        args = parser.parse_args(argv)
        assert args.json is True, argv
    assert parser.parse_args(["tasks", "--state", "dead"]).state == "DEAD"
