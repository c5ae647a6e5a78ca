"""play_policy.py: seeded games of a symbolic policy, and its video."""

from __future__ import annotations

import cv2
import numpy as np

from conftest import run_cli
from test_dataset import _constant_policy


def _policy(tmp_path, teacher_run):
    policy = _constant_policy(2)
    policy.provenance = {"detector": "ocatari", "teacher_run": str(teacher_run.path)}
    return policy.save(tmp_path / "p" / "policy.json")


def test_play_writes_a_video_with_the_teacher_beside(teacher_run, tmp_path):
    path = _policy(tmp_path, teacher_run)
    proc = run_cli("play_policy.py", "--policy", str(path), "--episodes", "2", "--max-steps",
                   "30", "--teacher-too", "--video", str(tmp_path / "v.mp4"), "--video-steps",
                   "25", "--runs-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "symbolic" in proc.stdout and "teacher" in proc.stdout
    capture = cv2.VideoCapture(str(tmp_path / "v.mp4"))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    assert len(frames) == 25
    assert frames[0].shape[1] > 2 * frames[0].shape[0]      # agent and teacher side by side
    assert len({f.tobytes() for f in frames}) > 5


def test_gif_writer_and_bad_video_paths(tmp_path):
    from PIL import Image
    import pytest
    from diffses.errors import UserError
    from diffses.video import PlayConfig, VideoWriter
    writer = VideoWriter(tmp_path / "v.gif")
    for i in range(10):
        writer.add(np.full((420, 680, 3), 20 * i, dtype=np.uint8))
    assert writer.close() == tmp_path / "v.gif"
    image = Image.open(tmp_path / "v.gif")
    assert image.n_frames == 5 and np.asarray(image.convert("RGB")).shape == (420, 680, 3)
    assert not list(tmp_path.glob("*.partial*"))
    with pytest.raises(UserError, match=".mp4 or .gif"):
        PlayConfig(video=str(tmp_path / "v.avi"))
