"""Tracking on synthetic trajectories: exact velocities, crossing paths, flicker, new objects."""

from __future__ import annotations

import pytest

from diffses.detection import Detection
from diffses.tracking import Tracker


def det(x: float, y: float, typ: int = 0) -> Detection:
    return Detection(x, y, 2, 4, typ)


def test_constant_velocity_gives_exact_velocity():
    tracker = Tracker(gate=20)
    out = [tracker.update([det(10 + 3 * t, 50 - 2 * t)]) for t in range(6)]
    assert (out[0][0].vx, out[0][0].vy) == (0.0, 0.0)  # a new object has no velocity yet
    for step in out[1:]:
        assert (step[0].vx, step[0].vy) == (3.0, -2.0)
    assert {o[0].track for o in out} == {0}


def test_crossing_paths_keep_identities():
    tracker = Tracker(gate=30)
    tracks = {}
    for t in range(9):
        a, b = det(10 + 5 * t, 40), det(50 - 5 * t, 40)  # they meet at t = 4
        objs = tracker.update([b, a] if t % 2 else [a, b])
        for o in objs:
            tracks.setdefault(o.track, []).append((o.detection.x, o.vx))
    assert len(tracks) == 2
    velocities = sorted({v for v in (vx for seq in tracks.values() for _, vx in seq[1:])})
    assert velocities == [-5.0, 5.0]
    for seq in tracks.values():
        assert len({vx for _, vx in seq[1:]}) == 1  # no identity swap at the crossing


def test_vanishing_object_keeps_identity_and_gets_velocity_over_the_gap():
    tracker = Tracker(gate=30, max_missing=3)
    first = tracker.update([det(10, 10)])[0]
    tracker.update([det(14, 10)])
    assert tracker.update([]) == []            # flickers out for two steps
    assert tracker.update([]) == []
    back = tracker.update([det(26, 10)])[0]    # 3 steps later, 12 px on: still 4 px/step
    assert back.track == first.track and back.vx == pytest.approx(4.0)


def test_object_gone_too_long_comes_back_as_new():
    tracker = Tracker(gate=30, max_missing=1)
    first = tracker.update([det(10, 10)])[0]
    tracker.update([])
    tracker.update([])
    back = tracker.update([det(10, 10)])[0]
    assert back.track != first.track and back.vx == 0.0


def test_types_are_tracked_separately_and_far_jumps_are_new_objects():
    tracker = Tracker(gate=10)
    tracker.update([det(10, 10, typ=0), det(12, 10, typ=1)])
    out = tracker.update([det(12, 10, typ=0), det(100, 100, typ=1)])
    by_type = {o.detection.type: o for o in out}
    assert by_type[0].vx == 2.0                       # type 0 moved, not swapped with type 1
    assert by_type[1].vx == 0.0 and by_type[1].track == 2  # beyond the gate: a new object
    tracker.reset()
    assert tracker.update([det(0, 0)])[0].track == 0


def test_coasting_reports_a_missed_object_where_it_should_be_for_k_steps():
    tracker = Tracker(gate=30, max_missing=3, coast=1)
    frames = [[det(10, 50)], [det(13, 48)], [], [det(19, 44)], [], [], [det(40, 40)]]
    out = [tracker.update(f) for f in frames]
    coasted = out[2][0]
    assert (coasted.detection.x, coasted.detection.y, coasted.vx, coasted.vy) == (16, 46, 3, -2)
    assert (coasted.detection.w, coasted.detection.h, coasted.track) == (2, 4, 0)
    assert (out[3][0].vx, out[3][0].vy, out[3][0].track) == (3.0, -2.0, 0)  # gap of 2 steps
    assert [o.detection.x for o in out[4]] == [22] and out[5] == []  # one step only
    plain = Tracker(gate=30, max_missing=3)
    assert [len(plain.update(f)) for f in frames] == [1, 1, 0, 1, 0, 0, 1]


def test_weak_detections_continue_a_track_but_never_start_one():
    def weak(x: float, y: float) -> Detection:
        return Detection(x, y, 2, 4, 0, confidence=0.2)

    tracker = Tracker(gate=10, confirm=0.5)
    assert tracker.update([weak(10, 50)]) == []                       # nothing to continue
    assert [o.track for o in tracker.update([det(12, 50)])] == [0]
    out = tracker.update([weak(14, 50), weak(60, 60)])                # a far weak one: dropped
    assert [(o.track, o.detection.x, o.vx) for o in out] == [(0, 14, 2.0)]
    out = tracker.update([det(16, 50), weak(16.5, 50)])              # the confident one wins
    assert [(o.track, o.detection.confidence) for o in out] == [(0, 1.0)]
    assert len(Tracker(gate=10).update([weak(10, 50)])) == 1          # confirm 0: all count
