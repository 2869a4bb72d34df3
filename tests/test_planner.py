"""The cron planner with a fake clock: slots, catch-up, overlap, jitter, claims."""
from __future__ import annotations

from datetime import datetime, timezone

from titan.core.planner import Planner


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def never(job: str) -> bool:
    return False


def test_a_slot_fires_once_when_its_time_comes_and_is_named_by_it() -> None:
    p = Planner()
    p.set_job("etl", "0 2 * * *", now=ts("2026-11-28T01:00:00"))
    assert p.next_deadline() == ts("2026-11-28T02:00:00")
    assert p.due(ts("2026-11-28T01:59:59"), never) == []
    fires = p.due(ts("2026-11-28T02:00:00"), never)
    assert [f.run_id for f in fires] == ["etl@2026-11-28T02:00Z"]
    assert p.due(ts("2026-11-28T02:00:30"), never) == []          # claimed: never twice
    assert p.jobs["etl"].cursor == ts("2026-11-28T02:00:00")


def test_catch_up_latest_runs_only_the_last_missed_slot() -> None:
    p = Planner()
    p.set_job("h", "0 * * * *", catchup="latest", now=0.0, cursor=ts("2026-11-28T00:30:00"))
    fires = p.due(ts("2026-11-28T05:10:00"), never)
    assert [f.run_id for f in fires] == ["h@2026-11-28T05:00Z"]


def test_catch_up_all_is_bounded_and_oldest_first() -> None:
    p = Planner()
    p.set_job("h", "0 * * * *", catchup="all", catchup_limit=3, overlap="allow", now=0.0,
              cursor=ts("2026-11-28T00:30:00"))
    fires = p.due(ts("2026-11-28T05:10:00"), never)
    assert [f.run_id for f in fires] == ["h@2026-11-28T03:00Z", "h@2026-11-28T04:00Z", "h@2026-11-28T05:00Z"]


def test_catch_up_all_with_overlap_skip_runs_the_missed_slots_one_after_another() -> None:
    # Given a job with catchup = all and the default overlap = skip, down for five hours
    p = Planner()
    p.set_job("h", "0 * * * *", catchup="all", catchup_limit=3, now=0.0, cursor=ts("2026-11-28T00:30:00"))
    busy = False
    # When the master is back, 15 s after the last of them: the oldest of the three missed slots
    # starts, the others (the last one too, though its minute is still going) wait for it
    assert [f.run_id for f in p.due(ts("2026-11-28T05:00:15"), lambda job: busy)] == ["h@2026-11-28T03:00Z"]
    busy = True
    assert p.due(ts("2026-11-28T05:10:30"), lambda job: busy) == []
    # And a slot that comes while one of them runs is still skipped
    assert p.due(ts("2026-11-28T06:00:00"), lambda job: busy) == []
    # Then each missed slot runs once the run before it has ended
    busy = False
    assert [f.run_id for f in p.due(ts("2026-11-28T06:05:00"), lambda job: busy)] == ["h@2026-11-28T04:00Z"]
    busy = True
    assert p.due(ts("2026-11-28T06:05:30"), lambda job: busy) == []
    busy = False
    assert [f.run_id for f in p.due(ts("2026-11-28T06:06:00"), lambda job: busy)] == ["h@2026-11-28T05:00Z"]
    assert p.due(ts("2026-11-28T06:07:00"), lambda job: busy) == []


def test_catch_up_none_skips_what_was_missed() -> None:
    p = Planner()
    p.set_job("h", "0 * * * *", catchup="none", now=0.0, cursor=ts("2026-11-28T00:30:00"))
    assert p.due(ts("2026-11-28T05:10:00"), never) == []
    assert p.jobs["h"].cursor == ts("2026-11-28T05:00:00")
    assert [f.run_id for f in p.due(ts("2026-11-28T06:00:05"), never)] == ["h@2026-11-28T06:00Z"]


def test_overlap_skip_drops_a_slot_while_the_previous_run_goes_on() -> None:
    p = Planner()
    p.set_job("m", "* * * * *", overlap="skip", now=ts("2026-11-28T00:00:30"))
    assert p.due(ts("2026-11-28T00:01:00"), lambda job: True) == []
    assert [f.run_id for f in p.due(ts("2026-11-28T00:02:00"), never)] == ["m@2026-11-28T00:02Z"]


def test_overlap_queue_starts_the_slot_when_the_previous_run_ends() -> None:
    p = Planner()
    p.set_job("m", "* * * * *", overlap="queue", now=ts("2026-11-28T00:00:30"))
    assert p.due(ts("2026-11-28T00:01:00"), lambda job: True) == []
    # the run ended: the owner asks again
    assert [f.run_id for f in p.due(ts("2026-11-28T00:01:20"), never)] == ["m@2026-11-28T00:01Z"]


def test_overlap_allow_runs_side_by_side() -> None:
    p = Planner()
    p.set_job("m", "* * * * *", overlap="allow", now=ts("2026-11-28T00:00:30"))
    assert len(p.due(ts("2026-11-28T00:01:00"), lambda job: True)) == 1


def test_jitter_delays_a_slot_the_same_way_every_time() -> None:
    p = Planner()
    p.set_job("j", "0 * * * *", jitter_s=600, now=ts("2026-11-28T00:30:00"))
    assert p.due(ts("2026-11-28T01:00:00"), never) == []
    start = p.next_deadline()
    assert ts("2026-11-28T01:00:00") < start < ts("2026-11-28T01:10:00")
    fires = p.due(start, never)
    assert [(f.run_id, f.start_at) for f in fires] == [("j@2026-11-28T01:00Z", start)]
    q = Planner()
    q.set_job("j", "0 * * * *", jitter_s=600, now=ts("2026-11-28T00:30:00"))
    q.due(ts("2026-11-28T01:00:00"), never)
    assert q.next_deadline() == start


def test_the_saved_cursor_stays_before_a_claimed_slot_until_its_run_starts() -> None:
    # Given a slot waiting out its jitter, and one queued behind a running run
    p = Planner()
    p.set_job("j", "0 * * * *", jitter_s=600, now=ts("2026-11-28T00:30:00"))
    p.due(ts("2026-11-28T01:00:00"), never)
    q = Planner()
    q.set_job("m", "* * * * *", overlap="queue", now=ts("2026-11-28T00:00:30"))
    q.due(ts("2026-11-28T00:01:00"), lambda job: True)
    # Then the cursor to save is just before each slot, though both slots are claimed
    assert p.jobs["j"].cursor == ts("2026-11-28T01:00:00")
    assert ts("2026-11-28T00:59:59") < p.saved_cursor(p.jobs["j"]) < ts("2026-11-28T01:00:00")
    assert ts("2026-11-28T00:00:59") < q.saved_cursor(q.jobs["m"]) < ts("2026-11-28T00:01:00")
    # When their runs start, the cursor to save is the slot
    p.due(p.next_deadline(), never)
    q.due(ts("2026-11-28T00:01:20"), never)
    assert p.saved_cursor(p.jobs["j"]) == ts("2026-11-28T01:00:00")
    assert q.saved_cursor(q.jobs["m"]) == ts("2026-11-28T00:01:00")


def test_time_zones_and_daylight_saving_follow_the_cron_engine() -> None:
    p = Planner()
    p.set_job("b", "30 2 * * *", tz="Europe/Berlin", now=ts("2026-03-28T12:00:00"))
    # 02:30 does not exist in Berlin on 2026-03-29: the fixed-time job runs at 03:00 CEST (01:00Z)
    assert p.next_deadline() == ts("2026-03-29T01:00:00")


def test_overlap_queue_keeps_at_most_catchup_limit_slots_and_starts_them_in_order() -> None:
    # Given a job firing every minute, overlap = queue, catchup_limit = 2, whose run stays busy
    p = Planner()
    p.set_job("m", "* * * * *", overlap="queue", catchup_limit=2, now=ts("2026-11-28T00:00:30"))
    busy = True
    # When five slots come while that run goes on
    for minute in range(1, 6):
        assert p.due(ts(f"2026-11-28T00:0{minute}:00"), lambda job: busy) == []
    # Then only the two oldest wait
    assert [f.run_id for f in p.jobs["m"].queued] == ["m@2026-11-28T00:01Z", "m@2026-11-28T00:02Z"]
    # And when the run ends, the first starts, and the second once that one has ended too
    busy = False
    assert [f.run_id for f in p.due(ts("2026-11-28T00:05:20"), lambda job: busy)] == ["m@2026-11-28T00:01Z"]
    busy = True
    assert p.due(ts("2026-11-28T00:05:30"), lambda job: busy) == []
    busy = False
    assert [f.run_id for f in p.due(ts("2026-11-28T00:05:40"), lambda job: busy)] == ["m@2026-11-28T00:02Z"]
    assert p.due(ts("2026-11-28T00:05:50"), lambda job: busy) == []
