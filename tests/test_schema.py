"""The dataset schema validator, the feature layout, and sample.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from diffses.features import FeatureLayout
from diffses.schema import SchemaError, load_dataset

ROOT = Path(__file__).resolve().parent.parent
GOOD = {"state": [{"type": 1, "x_velocity": 1.5, "y_velocity": -2.0, "x_position": 80,
                   "y_position": 100}], "teacher_action": 2}
META = {"env_id": "ALE/Pong-v5", "n_actions": 6, "action_meanings": ["a"] * 6,
        "type_names": {"0": "Player", "1": "Ball"}, "frame_size": [210, 160]}


def write(tmp_path: Path, records, meta=META, raw: str | None = None) -> Path:
    path = tmp_path / "dataset.json"
    path.write_text(raw if raw is not None else json.dumps(records, allow_nan=True))
    if meta is not None:
        (tmp_path / "dataset.meta.json").write_text(json.dumps(meta))
    return path


def bad_object(**change):
    obj = dict(GOOD["state"][0], **change)
    return [GOOD, {"state": [obj], "teacher_action": 0}]


@pytest.mark.parametrize("records, raw, message", [
    (None, "{not json", "not valid JSON"),
    ({"state": []}, None, "expected a JSON list of records"),
    ([], None, "has no records"),
    ([GOOD, {"teacher_action": 1}], None, "record 1: field 'state': missing"),
    ([GOOD, {"state": [], "teacher_action": "1"}], None,
     "record 1: field 'teacher_action': expected int"),
    (bad_object(x_position="80"), None, "record 1: field 'state[0].x_position': expected int"),
    (bad_object(x_position=80.5), None, "record 1: field 'state[0].x_position': expected int"),
    (bad_object(x_velocity=math.nan), None, "record 1: field 'state[0].x_velocity': nan"),
    (bad_object(y_velocity=math.inf), None, "record 1: field 'state[0].y_velocity': inf"),
    ([GOOD, {"state": [], "teacher_action": -1}], None, "record 1: field 'teacher_action': -1"),
    ([GOOD, {"state": [], "teacher_action": 6}], None, "the env has 6 actions"),
    ([GOOD, {"state": [{"type": 0}], "teacher_action": 0}], None,
     "record 1: field 'state[0].x_velocity': missing"),
    ([GOOD, {"state": [], "teacher_action": 0, "teacher_probs": [0.5]}], None,
     "record 1: field 'teacher_probs'"),
])
def test_malformed_datasets_name_file_record_and_field(tmp_path, records, raw, message):
    path = write(tmp_path, records, raw=raw)
    with pytest.raises(SchemaError) as err:
        load_dataset(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_bad_meta_is_refused(tmp_path):
    write(tmp_path, [GOOD], meta={"env_id": "x"})
    with pytest.raises(SchemaError, match="dataset.meta.json: field 'n_actions': missing"):
        load_dataset(tmp_path)


def test_valid_dataset_loads_from_folder_or_file(tmp_path):
    path = write(tmp_path, [GOOD, dict(GOOD, teacher_action=5, episode=0, step=1, reward=1.0)])
    data = load_dataset(tmp_path)
    assert data.path == path and len(data.records) == 2 and data.n_actions == 6
    assert load_dataset(path).meta == META


def test_feature_layout_vectors_and_round_trip():
    layout = FeatureLayout({0: "Player", 1: "Ball"}, {0: 1, 1: 2}, (210, 160))
    assert layout.names[:5] == ["player0_x", "player0_y", "player0_vx", "player0_vy",
                                "player0_present"]
    assert layout.names[5] == "ball0_x" and layout.names[-1] == "ball1_present"
    vec = layout.vector(GOOD["state"] + [dict(GOOD["state"][0], type=7)])  # unknown type dropped
    assert vec.shape == (15,)
    np.testing.assert_allclose(vec[5:10], [80 / 160, 100 / 210, 1.5 / 160 * 10,
                                           -2.0 / 210 * 10, 1.0], rtol=1e-6)
    assert vec[:5].tolist() == [0.0] * 5 and vec[10:].tolist() == [0.0] * 5
    again = FeatureLayout.from_dict(json.loads(json.dumps(layout.to_dict())))
    assert again == layout and again.names == layout.names
    np.testing.assert_array_equal(again.vector(GOOD["state"]), layout.vector(GOOD["state"]))


def test_layout_from_dataset_caps_slots():
    records = [{"state": [dict(GOOD["state"][0]) for _ in range(4)], "teacher_action": 0}]
    assert FeatureLayout.for_dataset(records, None).slots == {1: 4}
    assert FeatureLayout.for_dataset(records, None, max_slots=2).slots == {1: 2}
    assert FeatureLayout.for_dataset(records, META).type_names == {1: "Ball"}


def test_sample_json_validates():
    data = load_dataset(ROOT / "sample.json")
    assert len(data.records) >= 200 and data.meta["detector"] == "ocatari"
    layout = FeatureLayout.for_dataset(data.records, data.meta)
    assert {"player0_x", "ball0_x", "enemy0_y"} <= set(layout.names)
