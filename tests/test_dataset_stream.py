"""Datasets streamed into arrays: the same features and labels as the records in memory, a
feature cache that follows its file and layout, bad records refused by index."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, run_cli
from diffses.arrays import DatasetArrays, cache_path
from diffses.distill import DistillConfig, distil, merge_datasets, split_episodes
from diffses.features import FeatureLayout
from diffses.io import JsonListWriter
from diffses.schema import SchemaError, load_dataset
from planted import META, planted_records


def copy_sample(folder: Path) -> Path:
    for name in ("sample.json", "sample.meta.json"):
        shutil.copy(ROOT / name, folder / name)
    return folder / "sample.json"


def write_records(path: Path, records: list[dict], meta: dict | None = META) -> Path:
    """Write ``records`` with the dataset builder's writer (and the meta beside them)."""
    with JsonListWriter(path) as writer:
        for rec in records:
            writer.write(rec)
    if meta is not None:
        path.with_name(path.stem + ".meta.json").write_text(json.dumps(meta))
    return path


def assert_same_as_in_memory(path: Path, max_slots: int | None = None) -> DatasetArrays:
    """The streamed arrays of ``path`` against the records loaded into memory."""
    data = load_dataset(path)
    arrays = DatasetArrays.open(path, max_slots)
    layout = FeatureLayout.for_dataset(data.records, data.meta, max_slots)
    assert arrays.layout(max_slots) == layout and arrays.n_actions == data.n_actions
    X = layout.matrix([r["state"] for r in data.records])
    assert arrays.features(layout).dtype == np.float32
    np.testing.assert_array_equal(arrays.features(layout), X)
    np.testing.assert_array_equal(arrays.actions, [r["teacher_action"] for r in data.records])
    np.testing.assert_array_equal(arrays.episodes, [r.get("episode", 0) for r in data.records])
    if all("teacher_probs" in r for r in data.records):
        np.testing.assert_array_equal(arrays.probs, [r["teacher_probs"] for r in data.records])
    else:
        assert arrays.probs is None
    return arrays


def test_streamed_arrays_equal_the_records_in_memory(tmp_path):
    assert_same_as_in_memory(copy_sample(tmp_path))
    records = planted_records(n=3000, seed=4)
    records[7]["state"].append(dict(records[7]["state"][1], x_position=3))  # two balls once
    del records[2999]["teacher_probs"]
    written = write_records(tmp_path / "planted.json", records)
    assert_same_as_in_memory(written)
    assert_same_as_in_memory(written, max_slots=1)
    bare = write_records(tmp_path / "bare.json", records[:2999], meta=None)  # layout counted
    assert DatasetArrays.open(bare).layout().slots == {0: 1, 1: 2}
    assert_same_as_in_memory(bare)
    indented = write_records(tmp_path / "indented.json", [])  # any formatting, read in pieces
    indented.write_text(json.dumps(records, indent=3))
    assert_same_as_in_memory(indented)


def test_the_cache_is_used_and_a_stale_one_rebuilt(tmp_path):
    path = copy_sample(tmp_path)
    first = DatasetArrays.open(path)
    layout = first.layout()
    assert cache_path(path).is_file()
    again = DatasetArrays.open(path)
    np.testing.assert_array_equal(again.features(layout), first.features(layout))
    records = json.loads(path.read_text())
    records[0]["teacher_action"] = (records[0]["teacher_action"] + 1) % 6
    records[0]["state"][0]["y_position"] += 7
    path.write_text(json.dumps(records))
    changed = assert_same_as_in_memory(path)
    assert changed.actions[0] == records[0]["teacher_action"]
    meta = json.loads(path.with_name("sample.meta.json").read_text())
    path.with_name("sample.meta.json").write_text(json.dumps(dict(meta, n_actions=7,
                                                                  action_meanings=["A"] * 7)))
    with pytest.raises(SchemaError, match="record 0: field 'teacher_probs': expected a list "
                                          "of 7 floats"):  # validated again for the new meta
        DatasetArrays.open(path)
    path.with_name("sample.meta.json").write_text(json.dumps(meta))
    capped = FeatureLayout({0: "Player"}, {0: 1}, (210, 160))
    np.testing.assert_array_equal(DatasetArrays.open(path).features(capped),
                                  capped.matrix([r["state"] for r in records]))


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_a_damaged_cache_is_reported_and_rebuilt(tmp_path, capsys, damage):
    path = copy_sample(tmp_path)
    layout = DatasetArrays.open(path).layout()
    cache = cache_path(path)
    raw = bytearray(cache.read_bytes())
    if damage == "flip":
        info = zipfile.ZipFile(cache).getinfo("X.npy")
        start = info.header_offset + 30 + len(info.filename) + len(info.extra)
        raw[start + info.file_size // 2] ^= 0xFF
    elif damage == "truncate":
        raw = raw[:len(raw) // 2]
    else:
        raw = bytearray(b"not a cache")
    cache.write_bytes(bytes(raw))
    assert_same_as_in_memory(path)
    assert "unreadable feature cache" in capsys.readouterr().out
    capsys.readouterr()
    DatasetArrays.open(path).features(layout)
    assert "unreadable" not in capsys.readouterr().out


def test_a_bad_record_deep_in_a_big_file_exits_2_naming_it(tmp_path):
    records = planted_records(n=12000, seed=1)
    records[9876]["state"][0]["x_position"] = "140"
    path = write_records(tmp_path / "big.json", records)
    proc = run_cli("distill_teacher.py", "--dataset", str(path), "--runs-dir", str(tmp_path))
    assert proc.returncode == 2, proc.stderr
    assert "record 9876: field 'state[0].x_position': expected int" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "distill").exists()
    assert not cache_path(path).exists()
    text = path.read_text()
    cut = text.index('"episode"', len(text) // 2)
    path.write_text(text[:cut] + "x" + text[cut:])
    index = text.count("\n", 0, cut) - 1  # the writer puts record i on line i + 2
    with pytest.raises(SchemaError, match=rf"big.json: record {index}: not valid JSON"):
        DatasetArrays.open(path)


def test_distillation_streamed_equals_in_memory(tmp_path):
    path = copy_sample(tmp_path)
    DatasetArrays.open(path)
    cfg = DistillConfig(population_size=40, generations=2, restarts=1, runs_dir="unused")
    in_memory, before = distil(cfg, load_dataset(path))
    cached, after = distil(cfg, DatasetArrays.open(path))
    assert cached.trees == in_memory.trees and cached.layout == in_memory.layout
    assert before.pop("fit_seconds") >= 0 and after.pop("fit_seconds") >= 0
    assert after == before


def test_merging_datasets_numbers_the_new_episodes_on(tmp_path):
    first = write_records(tmp_path / "a.json", planted_records(n=300, seed=0))
    more = write_records(tmp_path / "b.json", planted_records(n=200, seed=1))
    merged = merge_datasets(DatasetArrays.open(first), more, tmp_path / "m.json", None)
    assert merged.n_records == 500 and merged.meta["records"] == 500
    np.testing.assert_array_equal(merged.episodes[300:], np.arange(200) // 100 + 3)
    assert load_dataset(tmp_path / "m.json").records[300]["state"] == \
        planted_records(n=1, seed=1)[0]["state"]


def test_a_merged_dataset_holds_out_only_the_teachers_own_episodes(tmp_path):
    first = write_records(tmp_path / "a.json", planted_records(n=500, seed=0))
    more = write_records(tmp_path / "b.json", planted_records(n=400, seed=1))
    data = DatasetArrays.open(first)
    layout = data.layout()
    merged = merge_datasets(data, more, tmp_path / "m.json", None)
    assert merged.meta["teacher_episodes"] == [0, 1, 2, 3, 4]
    twice = merge_datasets(merged, more, tmp_path / "m2.json", None)
    assert twice.meta["teacher_episodes"] == [0, 1, 2, 3, 4]
    for seed in range(4):
        alone = split_episodes(data, layout, 0.4, seed)
        grown = split_episodes(twice, layout, 0.4, seed)
        np.testing.assert_array_equal(grown.X_val, alone.X_val)
        assert len(grown.X_train) == len(alone.X_train) + 800
