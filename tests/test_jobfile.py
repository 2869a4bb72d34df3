"""Tests for titan.core.jobfile (INI job files -> JobSpec) and the `titan check` verb."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import List

import pytest

from conftest import THREE_PROBLEMS, write_job
from titan.cli import EXIT_OK, EXIT_USAGE, main
from titan.core.jobfile import JobFileError, JobSpec, Problem, ServiceDef, TaskDef, check_files, parse
from titan.errors import UsageError

FULL_EXAMPLE = """\
[job]
name = nightly-etl            ; required; letters digits _ . - (max 64)
schedule = 0 2 * * *          ; optional
timezone = Europe/Berlin      ; default UTC
overlap = skip                ; skip | queue | allow (default skip)
catchup = latest              ; none | latest | all (default latest)
catchup_limit = 10            ; default 10, 1..1000
jitter = 30s                  ; default 0
env.STAGE = prod

[task:a]
run = ./prepare.sh

[task:b]
run = ./prepare.sh b

[task:extract]
run = python3 extract.py --day "$(date +%F)"   ; required, kept literally
after = a, b                  ; dependencies (task names in this file)
requires = gpu, highmem       ; capability tags
node = worker-1               ; pin
files = extract.py, lib/util.py
retries = 3
retry_backoff = 10s
timeout = 10m
priority = 5
delay = 30s
env.DAY_FORMAT = %F

[task:load]
run = python3 load.py
after = extract
affinity = extract

[service:api]
run = python3 -m http.server $PORT     ; required
port = auto
requires = web
node = worker-2
env.MODE = api
restart = on-failure
backoff = 1s
backoff_max = 60s
stable = 30s
max_restarts = 5
restart_window = 60s
health = http://127.0.0.1:$PORT/
health_interval = 5s
health_timeout = 2s
health_failures = 3
stop_signal = TERM
stop_grace = 10s
files = www/index.html
"""

DESIGN_EXAMPLE = """\
[job]
name = nightly-etl
schedule = 0 2 * * *        ; optional; 5-field cron or @daily etc.
timezone = Europe/Berlin    ; default UTC
overlap = skip              ; skip | queue | allow
catchup = latest            ; none | latest | all (bounded)

[task:extract]
run = python3 extract.py --day "$(date +%F)"
files = extract.py
timeout = 10m
retries = 3

[task:train]
after = extract
requires = gpu
affinity = extract

[service:api]
run = python3 -m http.server $PORT
port = 8000                 ; or auto
restart = always            ; always | on-failure | never
health = http://127.0.0.1:$PORT/
"""

MINIMAL = "[job]\nname = j\n[task:t]\nrun = true\n"


def problems(text: str) -> List[str]:
    """Every problem ``parse`` reports for ``text``, as printed."""
    with pytest.raises(JobFileError) as info:
        parse(textwrap.dedent(text), filename="etl.ini")
    assert str(info.value) == "\n".join(str(p) for p in info.value.problems)
    return [str(p) for p in info.value.problems]


def one_problem(text: str) -> str:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


def job(body: str) -> str:
    """A valid job file followed by ``body`` (which starts on line 5)."""
    return MINIMAL + textwrap.dedent(body)


# ----- whole files ---------------------------------------------------------------------------
def test_the_full_example_parses_to_the_expected_spec() -> None:
    spec = parse(FULL_EXAMPLE, filename="etl.ini")
    expected = JobSpec(
        name="nightly-etl", schedule="0 2 * * *", timezone="Europe/Berlin", overlap="skip", catchup="latest",
        catchup_limit=10, jitter_s=30.0, env=(("STAGE", "prod"),),
        tasks={
            "a": TaskDef(name="a", run="./prepare.sh"),
            "b": TaskDef(name="b", run="./prepare.sh b"),
            "extract": TaskDef(name="extract", run='python3 extract.py --day "$(date +%F)"', after=("a", "b"),
                               requires=frozenset({"gpu", "highmem"}), node="worker-1",
                               files=("extract.py", "lib/util.py"), retries=3, retry_backoff_s=10.0,
                               timeout_s=600.0, priority=5, delay_s=30.0, env=(("DAY_FORMAT", "%F"),)),
            "load": TaskDef(name="load", run="python3 load.py", after=("extract",), affinity="extract"),
        },
        services={"api": ServiceDef(
            name="api", run="python3 -m http.server $PORT", port=0, requires=frozenset({"web"}), node="worker-2",
            env=(("MODE", "api"),), restart="on-failure", backoff_s=1.0, backoff_max_s=60.0, stable_s=30.0,
            max_restarts=5, restart_window_s=60.0, health="http://127.0.0.1:$PORT/", health_interval_s=5.0,
            health_timeout_s=2.0, health_failures=3, stop_signal="SIGTERM", stop_grace_s=10.0,
            files=("www/index.html",))},
    )
    assert spec == expected
    assert list(spec.tasks) == ["a", "b", "extract", "load"]
    assert spec.filename == "etl.ini"
    assert [spec.tasks[n].line for n in spec.tasks] == [11, 14, 17, 30]
    assert spec.services["api"].line == 35
    assert spec.key_lines[("task:extract", "files")] == 22
    assert spec.topological_order() == ["a", "b", "extract", "load"]


def test_the_design_example_parses_once_train_has_a_command() -> None:
    text = DESIGN_EXAMPLE.replace("requires = gpu\n", "requires = gpu\nrun = python3 train.py\n")
    spec = parse(text)
    assert spec == JobSpec(
        name="nightly-etl", schedule="0 2 * * *", timezone="Europe/Berlin", overlap="skip", catchup="latest",
        tasks={"extract": TaskDef(name="extract", run='python3 extract.py --day "$(date +%F)"',
                                  files=("extract.py",), timeout_s=600.0, retries=3),
               "train": TaskDef(name="train", run="python3 train.py", after=("extract",),
                                requires=frozenset({"gpu"}), affinity="extract")},
        services={"api": ServiceDef(name="api", run="python3 -m http.server $PORT", port=8000,
                                    restart="always", health="http://127.0.0.1:$PORT/")})
    assert spec.filename == "<job>"


def test_the_design_example_is_missing_train_run() -> None:
    # DESIGN.md's sketch leaves out train's command; the parser says so, on train's header line.
    with pytest.raises(JobFileError) as info:
        parse(DESIGN_EXAMPLE)
    assert [str(p) for p in info.value.problems] == [
        "<job>:14: [task:train] run: missing required key 'run': the command to run"]


def test_defaults() -> None:
    spec = parse(MINIMAL + "[service:s]\nrun = sleep 1000\n")
    assert (spec.schedule, spec.timezone, spec.overlap, spec.catchup, spec.catchup_limit, spec.jitter_s) == \
        (None, "UTC", "skip", "latest", 10, 0.0)
    assert spec.tasks["t"] == TaskDef(name="t", run="true", after=(), requires=frozenset(), affinity=None,
                                      node=None, files=(), retries=0, retry_backoff_s=1.0, timeout_s=None,
                                      priority=0, delay_s=0.0, env=())
    service = spec.services["s"]
    assert (service.port, service.restart, service.backoff_s, service.backoff_max_s, service.stable_s,
            service.max_restarts, service.restart_window_s, service.health, service.health_interval_s,
            service.health_timeout_s, service.health_failures, service.stop_signal, service.stop_grace_s) == \
        (None, "always", 1.0, 60.0, 30.0, 5, 60.0, None, 5.0, 2.0, 3, "SIGTERM", 10.0)


def test_a_service_only_file_is_a_job() -> None:
    spec = parse("[job]\nname = web\n[service:api]\nrun = ./serve\nport = 8080\n")
    assert spec.tasks == {} and list(spec.services) == ["api"]
    assert spec.summary() == "job web: 0 tasks, 1 service, no schedule"


def test_summary() -> None:
    assert parse(FULL_EXAMPLE).summary() == \
        "job nightly-etl: 4 tasks, 1 service, schedule '0 2 * * *' Europe/Berlin"


def test_specs_are_frozen() -> None:
    spec = parse(MINIMAL)
    with pytest.raises(AttributeError):
        spec.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.tasks["x"] = spec.tasks["t"]  # type: ignore[index]


# ----- syntax --------------------------------------------------------------------------------------
def test_percent_and_dollar_are_literal() -> None:
    spec = parse(job("""\
        [task:d]
        run = date +%F && echo 100% %(name)s $HOME ${X:-y} "$(date +%Y-%m-%d)"
        env.FMT = %Y%m%d
        """))
    assert spec.tasks["d"].run == 'date +%F && echo 100% %(name)s $HOME ${X:-y} "$(date +%Y-%m-%d)"'
    assert spec.tasks["d"].env == (("FMT", "%Y%m%d"),)


def test_inline_comments_need_whitespace_before_them() -> None:
    spec = parse(job("""\
        [task:c]
        run = a;b && echo x#y ; comment
        node = w1 # comment
        ; a whole-line comment
        # another one
        env.URL = http://h/#frag	# tab before the comment
        """))
    task = spec.tasks["c"]
    assert task.run == "a;b && echo x#y"
    assert task.node == "w1"
    assert task.env == (("URL", "http://h/#frag"),)


def test_multi_line_values() -> None:
    spec = parse(job("""\
        [task:m]
        run = set -e
            echo one

            # a comment line inside the value is dropped
            echo two   ; so is this comment
        after = a,
            b
        requires =
            gpu
            highmem
        [task:a]
        run = true
        [task:b]
        run = true
        """))
    task = spec.tasks["m"]
    assert task.run == "set -e\necho one\n\necho two"
    assert task.after == ("a", "b")
    assert task.requires == frozenset({"gpu", "highmem"})


def test_keys_are_case_insensitive_but_env_names_keep_their_case() -> None:
    spec = parse("[JOB]\nName = j\nENV.Path = /bin\n[Task:t]\nRUN = true\nRetries: 2\nenv.lower = 1\n")
    assert spec.env == (("Path", "/bin"),)
    assert spec.tasks["t"].retries == 2
    assert spec.tasks["t"].env == (("lower", "1"),)


def test_colon_delimiter_crlf_and_byte_order_mark() -> None:
    spec = parse("\ufeff[job]\r\nname: j\r\n[task:t]\r\nrun: echo a=b:c\r\n")
    assert spec.tasks["t"].run == "echo a=b:c"


def test_section_names_are_stripped() -> None:
    assert list(parse("[job]\nname=j\n[task: spaced ]\nrun=true\n").tasks) == ["spaced"]


def test_environment_merges_job_and_unit() -> None:
    spec = parse(FULL_EXAMPLE)
    assert spec.environment("extract") == {"STAGE": "prod", "DAY_FORMAT": "%F"}
    assert spec.environment("api") == {"STAGE": "prod", "MODE": "api"}
    overridden = parse("[job]\nname=j\nenv.A=job\n[task:t]\nrun=true\nenv.A=task\n")
    assert overridden.environment("t") == {"A": "task"}


# ----- order ------------------------------------------------------------------------------------------
def test_topological_order_of_a_diamond_keeps_file_order_for_ties() -> None:
    spec = parse("""\
[job]
name = diamond
[task:join]
run = true
after = right, left
[task:right]
run = true
after = start
[task:left]
run = true
after = start
[task:start]
run = true
[task:alone]
run = true
""")
    assert spec.topological_order() == ["start", "right", "left", "join", "alone"]


def test_a_long_chain_is_ordered_without_recursion() -> None:
    lines = ["[job]", "name = chain", "[task:t0]", "run = true"]
    for i in range(1, 3000):
        lines += [f"[task:t{i}]", "run = true", f"after = t{i - 1}"]
    spec = parse("\n".join(lines))
    assert spec.topological_order() == [f"t{i}" for i in range(3000)]


# ----- one problem per mistake, with exact messages --------------------------------------------------------
def test_problem_format() -> None:
    assert str(Problem("f.ini", 3, "task:x", "run", "m")) == "f.ini:3: [task:x] run: m"
    assert str(Problem("f.ini", 3, "task:x", None, "m")) == "f.ini:3: [task:x] m"
    assert str(Problem("f.ini", 1, None, None, "m")) == "f.ini:1: m"
    assert issubclass(JobFileError, UsageError)


@pytest.mark.parametrize("body, expected", [
    ("retires = 3", "etl.ini:5: [task:t] retires: unknown key 'retires' in [task:t]; did you mean 'retries'?"),
    ("tiemout = 1s", "etl.ini:5: [task:t] tiemout: unknown key 'tiemout' in [task:t]; did you mean 'timeout'?"),
    ("colour = red", "etl.ini:5: [task:t] colour: unknown key 'colour' in [task:t]; [task:t] takes affinity, "
                     "after, delay, files, node, priority, requires, retries, retry_backoff, run, timeout, env.NAME"),
    ("port = 80", "etl.ini:5: [task:t] port: unknown key 'port' in [task:t]; 'port' belongs in [service:NAME]"),
    ("schedule = @daily", "etl.ini:5: [task:t] schedule: unknown key 'schedule' in [task:t]; 'schedule' "
                          "belongs in [job]"),
    ("env = A=1", "etl.ini:5: [task:t] env: unknown key 'env' in [task:t]; write env.NAME = value"),
    ("env.1A = x", "etl.ini:5: [task:t] env.1A: bad environment variable name '1A': expected a letter or '_' "
                   "followed by letters, digits or '_'"),
    ("env.TITAN_SHARED = /tmp/x", "etl.ini:5: [task:t] env.TITAN_SHARED: TITAN_SHARED is set by Titan (the run's "
                                  "shared directory) and cannot be set here; choose another name"),
    ("timeout = 10x", "etl.ini:5: [task:t] timeout: bad duration '10x': expected a number of seconds, or numbers "
                      "with units ms, s, m, h, d, e.g. '90s', '10m', '1h30m', '2d'"),
    ("timeout = 0", "etl.ini:5: [task:t] timeout: bad duration '0': expected more than zero, e.g. '5s'"),
    ("retries = lots", "etl.ini:5: [task:t] retries: bad number 'lots': expected a whole number from 0 to 1000"),
    ("retries = 1001", "etl.ini:5: [task:t] retries: bad number '1001': expected a whole number from 0 to 1000"),
    ("priority = 1.5", "etl.ini:5: [task:t] priority: bad number '1.5': expected a whole number from -1000 to "
                       "1000"),
    ("retry_backoff = soon", "etl.ini:5: [task:t] retry_backoff: bad duration 'soon': expected a number of "
                             "seconds, or numbers with units ms, s, m, h, d, e.g. '90s', '10m', '1h30m', '2d'"),
    ("delay = -1s", "etl.ini:5: [task:t] delay: bad duration '-1s': expected a number of seconds, or numbers with "
                    "units ms, s, m, h, d, e.g. '90s', '10m', '1h30m', '2d'"),
    ("requires = gpu!", "etl.ini:5: [task:t] requires: bad tag 'gpu!': use letters, digits, '_', '.', '-' (at "
                        "most 64, starting with a letter or digit)"),
    ("node =", "etl.ini:5: [task:t] node: bad node name '': expected a worker name without spaces (at most 255 "
               "characters)"),
    ("files = ../secret.txt", "etl.ini:5: [task:t] files: bad file path '../secret.txt': '..' would leave the "
                              "workspace"),
    ("files = /etc/passwd", "etl.ini:5: [task:t] files: bad file path '/etc/passwd': absolute paths are refused; "
                            "give a path relative to the job file"),
    ("files = lib/*.py", "etl.ini:5: [task:t] files: bad file path 'lib/*.py': globs are not expanded; list each "
                         "file"),
    ("after = t", "etl.ini:5: [task:t] after: task 't' cannot be after itself"),
    ("after = x y", "etl.ini:5: [task:t] after: unknown task 'x' in after; the job's tasks are t, y"),
    ("affinity = t", "etl.ini:5: [task:t] affinity: a task cannot have affinity to itself"),
    ("affinity = nope", "etl.ini:5: [task:t] affinity: unknown task 'nope' in affinity; the job's tasks are t, y"),
    ("affinity = y", "etl.ini:5: [task:t] affinity: task 'y' is not upstream of 't', so it may not have run yet: "
                     "add it to after (directly or through another task)"),
    ("run = again", "etl.ini:5: [task:t] run: duplicate key 'run' in [task:t]: already set on line 4"),
    ("RUN = again", "etl.ini:5: [task:t] run: duplicate key 'run' in [task:t]: already set on line 4"),
    ("= value", "etl.ini:5: [task:t] expected 'key = value', got '= value'"),
    ("just words", "etl.ini:5: [task:t] expected 'key = value', got 'just words'"),
    ("run2 = x\n  continued = still the same bad key",
     "etl.ini:5: [task:t] run2: unknown key 'run2' in [task:t]; did you mean 'run'?"),
])
def test_task_key_problems(body: str, expected: str) -> None:
    # MINIMAL ends with [task:t] (line 3) and its run (line 4); body starts on line 5.
    # A task y exists (line 7) so that "x y" has exactly one unknown name and affinity has a target.
    text = MINIMAL + body + "\n[task:y]\nrun = true\n"
    assert problems(text) == [expected]


@pytest.mark.parametrize("body, expected", [
    ("port = 0", "port: bad port '0': write 'auto' to have a free port picked"),
    ("port = 70000", "port: bad port '70000': expected a port number from 1 to 65535, or 'auto'"),
    ("port = http", "port: bad port 'http': expected a port number from 1 to 65535, or 'auto'"),
    ("restart = on_failure", "restart: bad restart policy 'on_failure': expected always | on-failure | never; "
                             "did you mean 'on-failure'?"),
    ("backoff = fast", "backoff: bad duration 'fast': expected a number of seconds, or numbers with units ms, "
                       "s, m, h, d, e.g. '90s', '10m', '1h30m', '2d'"),
    ("backoff_max = 0s", "backoff_max: bad duration '0s': expected more than zero, e.g. '5s'"),
    ("backoff = 2m", "backoff: backoff (120s) is longer than backoff_max (60s)"),
    ("backoff = 5s\nbackoff_max = 2s", "backoff_max: backoff (5s) is longer than backoff_max (2s)"),
    ("stable = x", "stable: bad duration 'x': expected a number of seconds, or numbers with units ms, s, m, h, "
                   "d, e.g. '90s', '10m', '1h30m', '2d'"),
    ("max_restarts = -1", "max_restarts: bad number '-1': expected a whole number from 0 to 10000"),
    ("restart_window = 0", "restart_window: bad duration '0': expected more than zero, e.g. '5s'"),
    ("health = udp", "health: bad health check 'udp': expected 'tcp' or an http:// or https:// URL, e.g. "
                     "'http://127.0.0.1:$PORT/'"),
    ("health_interval = 0", "health_interval: bad duration '0': expected more than zero, e.g. '5s'"),
    ("health_timeout = never", "health_timeout: bad duration 'never': expected a number of seconds, or numbers "
                               "with units ms, s, m, h, d, e.g. '90s', '10m', '1h30m', '2d'"),
    ("health_failures = 0", "health_failures: bad number '0': expected a whole number from 1 to 100"),
    ("stop_signal = SIGTREM", "stop_signal: bad signal 'SIGTREM': expected one of HUP, INT, QUIT, ABRT, KILL, "
                              "USR1, USR2, ALRM, TERM, WINCH; did you mean 'TERM'?"),
    ("stop_grace = -1", "stop_grace: bad duration '-1': expected a number of seconds, or numbers with units ms, "
                        "s, m, h, d, e.g. '90s', '10m', '1h30m', '2d'"),
    ("retries = 3", "retries: unknown key 'retries' in [service:s]; 'retries' belongs in [task:NAME]"),
    ("helth = tcp", "helth: unknown key 'helth' in [service:s]; did you mean 'health'?"),
])
def test_service_key_problems(body: str, expected: str) -> None:
    text = MINIMAL + "[service:s]\nrun = ./serve\n" + body + "\n"
    line = 7 + body.count("\n")  # the problem is on the body's last line
    assert problems(text) == [f"etl.ini:{line}: [service:s] " + expected]


def test_health_checks_need_a_port() -> None:
    text = MINIMAL + "[service:s]\nrun = ./serve\nhealth = tcp\n[service:h]\nrun = x\nhealth = http://h:$PORT/\n"
    assert problems(text) == [
        "etl.ini:7: [service:s] health: health check 'tcp' needs a port: set port = NUMBER or port = auto",
        "etl.ini:10: [service:h] health: health check 'http://h:$PORT/' needs a port: set port = NUMBER or "
        "port = auto"]
    parse(MINIMAL + "[service:s]\nrun = ./serve\nhealth = tcp\nport = auto\n")
    parse(MINIMAL + "[service:s]\nrun = ./serve\nhealth = http://h:8080/\n")


@pytest.mark.parametrize("body, expected", [
    ("name = bad name", "etl.ini:2: [job] name: bad job name 'bad name': use letters, digits, '_', '.', '-' (at "
                        "most 64, starting with a letter or digit)"),
    ("timezone = Mars/Olympus", "etl.ini:2: [job] timezone: unknown time zone 'Mars/Olympus': expected an IANA "
                                "name such as 'Europe/Berlin' or 'UTC'"),
    ("timezone = europe/berlin", "etl.ini:2: [job] timezone: unknown time zone 'europe/berlin': expected an IANA "
                                 "name such as 'Europe/Berlin' or 'UTC'; did you mean 'Europe/Berlin'?"),
    ("overlap = skipp", "etl.ini:2: [job] overlap: bad overlap policy 'skipp': expected skip | queue | allow; "
                        "did you mean 'skip'?"),
    ("catchup = every", "etl.ini:2: [job] catchup: bad catchup policy 'every': expected none | latest | all"),
    ("catchup_limit = 0", "etl.ini:2: [job] catchup_limit: bad number '0': expected a whole number from 1 to "
                          "1000"),
    ("jitter = a bit", "etl.ini:2: [job] jitter: bad duration 'a bit': expected a number of seconds, or numbers "
                       "with units ms, s, m, h, d, e.g. '90s', '10m', '1h30m', '2d'"),
    ("env.A-B = 1", "etl.ini:2: [job] env.A-B: bad environment variable name 'A-B': expected a letter or '_' "
                    "followed by letters, digits or '_'"),
    ("env.TITAN_RUN = x", "etl.ini:2: [job] env.TITAN_RUN: TITAN_RUN is set by Titan (the run's id) and cannot "
                          "be set here; choose another name"),
    ("run = true", "etl.ini:2: [job] run: unknown key 'run' in [job]; 'run' belongs in [task:NAME]"),
    ("shedule = @daily", "etl.ini:2: [job] shedule: unknown key 'shedule' in [job]; did you mean 'schedule'?"),
])
def test_job_key_problems(body: str, expected: str) -> None:
    name = "" if body.startswith("name") else "name = j\n"
    assert problems(f"[job]\n{body}\n{name}[task:t]\nrun = true\n") == [expected]


def test_a_bad_schedule_names_file_line_and_value() -> None:
    found = one_problem("[job]\nname = j\nschedule = 0 2 * *\n[task:t]\nrun = true\n")
    assert found.startswith("etl.ini:3: [job] schedule: bad schedule '0 2 * *'")


def test_a_schedule_is_normalised() -> None:
    assert parse("[job]\nname = j\nschedule =  0  2 * * *\n[task:t]\nrun = true\n").schedule == "0 2 * * *"


@pytest.mark.parametrize("text, expected", [
    ("[job]\nname = j\n", ["etl.ini:1: [job] the job has nothing to run: add a [task:NAME] or [service:NAME] "
                           "section"]),
    ("[task:t]\nrun = true\n", ["etl.ini:1: no [job] section: add [job] with name = JOBNAME"]),
    ("", ["etl.ini:1: no [job] section: add [job] with name = JOBNAME"]),
    ("[job]\n[task:t]\nrun = true\n", ["etl.ini:1: [job] name: missing required key 'name': the job's name"]),
    ("name = j\n[job]\nname = j\n[task:t]\nrun = true\n",
     ["etl.ini:1: 'name = j' is outside any section; put it under [job], [task:NAME] or [service:NAME]"]),
    ("[job]\nname = j\n[task:t]\nafter = \n",
     ["etl.ini:3: [task:t] run: missing required key 'run': the command to run"]),
    ("[job]\nname = j\n[service:s]\nport = 80\n",
     ["etl.ini:3: [service:s] run: missing required key 'run': the command to run"]),
    ("[job]\nname = j\n[task:t]\nrun =\n", ["etl.ini:4: [task:t] run: empty command: give the shell command to run"]),
    (MINIMAL + "[tsk:x]\nrun = true\n", ["etl.ini:5: [tsk:x] unknown section [tsk:x]; did you mean [task:x]? "
                                         "(sections are [job], [task:NAME] and [service:NAME])"]),
    (MINIMAL + "[extract]\nrun = true\n", ["etl.ini:5: [extract] unknown section [extract] (sections are [job], "
                                           "[task:NAME] and [service:NAME])"]),
    (MINIMAL + "[task]\nrun = true\n", ["etl.ini:5: [task:] [task] needs a name: write [task:NAME]"]),
    (MINIMAL + "[task:a b]\nrun = true\n", ["etl.ini:5: [task:a b] bad task name 'a b': use letters, digits, '_', "
                                            "'.', '-' (at most 64, starting with a letter or digit)"]),
    (MINIMAL + "[task:x\nrun = true\n", ["etl.ini:5: bad section header '[task:x': write [job], [task:NAME] or "
                                         "[service:NAME] alone on the line"]),
    ("[job:etl]\nname = j\n[task:t]\nrun = true\n", ["etl.ini:1: [job:etl] the [job] section takes no name: write "
                                                     "[job] and set name = NAME inside it"]),
    (MINIMAL + "[task:t]\nrun = false\n", ["etl.ini:5: [task:t] duplicate section [task:t]: first on line 3"]),
    (MINIMAL + "[job]\nname = k\n", ["etl.ini:5: [job] duplicate section [job]: first on line 1"]),
    (MINIMAL + "[service:t]\nrun = ./serve\n", ["etl.ini:5: [service:t] service 't' has the same name as the task "
                                                "on line 3; names must be unique across tasks and services"]),
    (MINIMAL + "[service:api]\nrun = x\n[task:u]\nrun = true\nafter = api\naffinity = api\n",
     ["etl.ini:9: [task:u] after: 'api' in after is a service; only tasks can be named here",
      "etl.ini:10: [task:u] affinity: 'api' in affinity is a service; only tasks can be named here"]),
    (MINIMAL + "[task:u]\nrun = true\nafter = extrct\n[task:extract]\nrun = true\n",
     ["etl.ini:7: [task:u] after: unknown task 'extrct' in after; did you mean 'extract'?"]),
    (MINIMAL + "[task:u]\nrun = true\nafter = t\naffinity = t\nnode = w1\n",
     ["etl.ini:8: [task:u] affinity: set either affinity or node, not both"]),
])
def test_file_problems(text: str, expected: List[str]) -> None:
    assert problems(text) == expected


def test_a_comment_that_cuts_a_quoted_command_is_reported() -> None:
    assert problems(MINIMAL + '[task:q]\nrun = echo "a ; b"\n') == [
        "etl.ini:6: [task:q] run: a ';' or '#' after a space starts a comment, and here it cuts the command "
        "inside quotes; write ';' with no space before it, or move the command into a script"]
    assert parse(MINIMAL + '[task:q]\nrun = echo "a; b" ; fine\n').tasks["q"].run == 'echo "a; b"'


def test_nul_bytes_are_refused() -> None:
    assert problems(MINIMAL + "[task:n]\nrun = echo a\0b\nenv.X = 1\0\n") == [
        "etl.ini:6: [task:n] run: command 'echo a\\x00b' contains a NUL byte, which no program can receive",
        "etl.ini:7: [task:n] env.X: environment value '1\\x00' contains a NUL byte"]


def test_duplicate_env_keys_name_both_lines() -> None:
    assert problems(MINIMAL + "env.A = 1\nenv.a = 2\nenv.A = 3\n") == [
        "etl.ini:7: [task:t] env.A: duplicate key 'env.A' in [task:t]: already set on line 5"]


# ----- cycles -----------------------------------------------------------------------------------------
def test_a_cycle_is_reported_once_with_its_path() -> None:
    text = """\
        [job]
        name = j
        [task:a]
        run = true
        after = c
        [task:b]
        run = true
        after = a
        [task:c]
        run = true
        after = b
        [task:d]
        run = true
        after = c
        """
    assert problems(text) == ["etl.ini:5: [task:a] after: dependency cycle a -> c -> b -> a (each task is after "
                              "the next); remove one of these dependencies"]


def test_two_separate_cycles_are_two_problems() -> None:
    text = MINIMAL + ("[task:a]\nrun=x\nafter=b\n[task:b]\nrun=x\nafter=a\n"
                      "[task:c]\nrun=x\nafter=d\n[task:d]\nrun=x\nafter=c\n")
    assert problems(text) == [
        "etl.ini:7: [task:a] after: dependency cycle a -> b -> a (each task is after the next); remove one of "
        "these dependencies",
        "etl.ini:13: [task:c] after: dependency cycle c -> d -> c (each task is after the next); remove one of "
        "these dependencies"]


def test_affinity_may_name_a_transitive_upstream_task() -> None:
    spec = parse(MINIMAL + "[task:u]\nrun = true\nafter = t\n[task:v]\nrun = true\nafter = u\naffinity = t\n")
    assert spec.tasks["v"].affinity == "t"


# ----- all problems at once ------------------------------------------------------------------------------
def test_every_problem_is_reported_not_just_the_first() -> None:
    text = """\
        [job]
        name = nightly-etl
        timezone = Europe/Berln

        [task:extract]
        run = python3 extract.py
        retires = 3

        [task:load]
        run = python3 load.py
        after = extrct
        timeout = 10 minutes
        """
    assert problems(text) == [
        "etl.ini:3: [job] timezone: unknown time zone 'Europe/Berln': expected an IANA name such as "
        "'Europe/Berlin' or 'UTC'; did you mean 'Europe/Berlin'?",
        "etl.ini:7: [task:extract] retires: unknown key 'retires' in [task:extract]; did you mean 'retries'?",
        "etl.ini:11: [task:load] after: unknown task 'extrct' in after; did you mean 'extract'?",
        "etl.ini:12: [task:load] timeout: bad duration '10 minutes': expected a number of seconds, or numbers "
        "with units ms, s, m, h, d, e.g. '90s', '10m', '1h30m', '2d'",
    ]


def test_problems_come_in_line_order() -> None:
    found = problems(MINIMAL + "[task:u]\nrun = x\nafter = zz\n[task:v]\nretries = x\n")
    assert [int(p.split(":")[1]) for p in found] == sorted(int(p.split(":")[1]) for p in found)
    assert len(found) == 3


# ----- files ------------------------------------------------------------------------------------------
def test_check_files_reports_missing_files_at_the_files_line() -> None:
    spec = parse(FULL_EXAMPLE, filename="etl.ini")
    present = {"extract.py", "www/index.html"}
    assert [str(p) for p in check_files(spec, present.__contains__)] == [
        "etl.ini:22: [task:extract] files: no such file 'lib/util.py' (paths are relative to the job file's "
        "directory)"]
    assert check_files(spec, lambda path: True) == []


# ----- titan check -------------------------------------------------------------------------------------

def test_check_prints_ok_with_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    good = write_job(tmp_path, "etl.ini", FULL_EXAMPLE)
    for name in ("extract.py", "lib/util.py", "www/index.html"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("")
    web = write_job(tmp_path, "web.ini", "[job]\nname = web\n[service:api]\nrun = ./serve\n")
    assert main(["check", good, web]) == EXIT_OK
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"{good}: ok (job nightly-etl: 4 tasks, 1 service, schedule '0 2 * * *' Europe/Berlin)",
        f"{web}: ok (job web: 0 tasks, 1 service, no schedule)"]
    assert err == ""


def test_check_prints_every_problem_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = write_job(tmp_path, "bad.ini", THREE_PROBLEMS.replace("NAME", "j"))
    good = write_job(tmp_path, "good.ini", MINIMAL)
    assert main(["check", bad, good]) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        f"{bad}:5: [task:a] after: dependency cycle a -> b -> a (each task is after the next); remove one of these "
        "dependencies",
        f"{bad}:6: [task:a] retires: unknown key 'retires' in [task:a]; did you mean 'retries'?",
        f"{bad}:12: [service:s] port: bad port '99999': expected a port number from 1 to 65535, or 'auto'"]
    assert out == f"{good}: ok (job j: 1 task, 0 services, no schedule)\n"


def test_check_json_gives_each_file_its_verdict(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = write_job(tmp_path, "bad.ini", MINIMAL + "retries = x\n")
    good = write_job(tmp_path, "good.ini", MINIMAL)
    assert main(["check", good, bad, "--json"]) == EXIT_USAGE
    assert json.loads(capsys.readouterr().out) == [
        {"file": good, "ok": True, "job": "j", "summary": "job j: 1 task, 0 services, no schedule"},
        {"file": bad, "ok": False,
         "problems": [f"{bad}:5: [task:t] retries: bad number 'x': expected a whole number from 0 to 1000"]}]


def test_check_reports_missing_files_relative_to_the_job_file(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    path = write_job(tmp_path, "j.ini", MINIMAL + "files = here.py, gone.py\n")
    (tmp_path / "here.py").write_text("")
    assert main(["check", path]) == EXIT_USAGE
    assert capsys.readouterr().err == (f"{path}:5: [task:t] files: no such file 'gone.py' (paths are relative to "
                                       "the job file's directory)\n")


def test_check_unreadable_and_binary_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = str(tmp_path / "missing.ini")
    binary = tmp_path / "bin.ini"
    binary.write_bytes(b"[job]\nname = \xff\n")
    assert main(["check", missing, str(tmp_path), str(binary)]) == EXIT_USAGE
    assert capsys.readouterr().err.splitlines() == [
        f"{missing}: cannot read the job file: No such file or directory",
        f"{tmp_path}: cannot read the job file: Is a directory",
        f"{binary}:2: not UTF-8 text (byte offset 13); save the file as UTF-8"]


def test_check_reports_missing_files_with_the_other_problems(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    path = write_job(tmp_path, "j.ini", MINIMAL + "files = gone.py\nretries = x\n"
                     "[task:u]\nrun = y\nfiles = ../a, /b, ok.py\n")
    assert main(["check", path]) == EXIT_USAGE
    assert capsys.readouterr().err.splitlines() == [
        f"{path}:5: [task:t] files: no such file 'gone.py' (paths are relative to the job file's directory)",
        f"{path}:6: [task:t] retries: bad number 'x': expected a whole number from 0 to 1000",
        f"{path}:9: [task:u] files: bad file path '../a': '..' would leave the workspace",
        f"{path}:9: [task:u] files: bad file path '/b': absolute paths are refused; give a path relative to "
        "the job file"]


@pytest.mark.parametrize("verb", [["submit", "--master", "127.0.0.1:1"], ["up", "--data", "{data}"]])
def test_submit_and_up_refuse_a_file_they_cannot_read_before_reaching_a_master(
        tmp_path: Path, capsys: pytest.CaptureFixture, verb: List[str]) -> None:
    """Nothing is started or contacted: the file is read and checked first (no master listens on port 1)."""
    data = tmp_path / "cluster"
    binary = tmp_path / "bin.ini"
    binary.write_bytes(b"[job]\nname = \xff\n")
    bad = write_job(tmp_path, "bad.ini", MINIMAL + "files = gone.py\n")
    args = [a.replace("{data}", str(data)) for a in verb]
    missing = str(tmp_path / "missing.ini")
    cases = [(missing, f"{missing}: cannot read the job file: No such file or directory"),
             (str(binary), f"{binary}:2: not UTF-8 text (byte offset 13); save the file as UTF-8"),
             (bad, f"{bad}:5: [task:t] files: no such file 'gone.py' (paths are relative to the job file's "
                   "directory)")]
    for path, line in cases:
        assert main(args + [path]) == EXIT_USAGE
        assert capsys.readouterr().err == line + "\n"
    assert not data.exists()                 # `up` started no cluster


def test_check_needs_a_file(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(["check"])
    assert info.value.code == EXIT_USAGE
    assert "FILE" in capsys.readouterr().err
