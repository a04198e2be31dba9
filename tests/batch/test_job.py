"""The batch job: Azure batch CSVs in, JSON Lines out, bad rows recorded, resumable."""

from __future__ import annotations

import csv
import json

import pytest

from sam_demo import EngineConfig, load_engine
from sam_demo.batch.job import read_rows, run_job, run_local
from sam_demo.endpoint.fetch import FetchPolicy
from sam_demo.endpoint.scoring import score
from tests.support.requests import BATCH_HEADER


def run(engine, job_folder, output, **kwargs):
    return run_job(job_folder, output, lambda rows: run_local(rows, engine, FetchPolicy()), progress=False, **kwargs)


def test_outputs_one_line_per_row_in_order_with_errors_recorded(engine, job, tmp_path):
    folder, rows = job
    output = tmp_path / "out.jsonl"
    summary = run(engine, folder, output, predictions_csv=tmp_path / "predictions.csv")
    assert summary == {"rows": 6, "skipped": 0, "written": 6, "errors": 2, "dropped": 0}
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [(r["file"], r["row"]) for r in lines] == [
        ("a.csv", 0),
        ("a.csv", 1),
        ("a.csv", 2),
        ("a.csv", 3),
        ("b.csv", 0),
        ("b.csv", 1),
    ]
    assert lines[2]["error"]["column"] == "input_points" and "ragged" in lines[2]["error"]["error"]
    assert lines[4]["error"]["column"] == "image"
    for line, row in zip(lines, rows):
        if "response" in line:  # equal to the real-time endpoint's answer for the same row
            expected = score({"input_data": {"columns": BATCH_HEADER, "index": [0], "data": [row]}}, engine)
            assert line["response"] == expected[0]
    with open(tmp_path / "predictions.csv", newline="") as handle:
        table = list(csv.reader(handle))
    assert len(table) == 6 and table[0][:2] == ["a.csv", "0"]
    assert "predictions" in json.loads(table[0][2])["response"] and "error" in json.loads(table[2][2])


def test_resume_after_interrupt_and_torn_line(engine, job, tmp_path):
    folder, _ = job
    full = tmp_path / "full.jsonl"
    run(engine, folder, full)

    partial = tmp_path / "partial.jsonl"

    def interrupted(rows):
        for i, record in enumerate(run_local(rows, engine, FetchPolicy())):
            if i == 3:
                raise KeyboardInterrupt
            yield record

    with pytest.raises(KeyboardInterrupt):
        run_job(folder, partial, interrupted, progress=False)
    assert len(partial.read_text().splitlines()) == 3
    with open(partial, "a") as handle:
        handle.write('{"file": "a.csv", "row": 3, "resp')  # a crash mid-write
    summary = run(engine, folder, partial)
    assert summary["skipped"] == 3 and summary["written"] == 3 and summary["dropped"] == 1
    assert partial.read_bytes() == full.read_bytes()
    assert run(engine, folder, partial)["written"] == 0  # nothing left to do, nothing duplicated


def test_a_corrupt_line_in_the_middle_is_reported_with_the_lines_dropped_after_it(engine, job, tmp_path, capsys):
    folder, _ = job
    full = tmp_path / "full.jsonl"
    run(engine, folder, full)
    lines = full.read_text().splitlines(keepends=True)
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_text("".join(lines[:2]) + "not json\n" + "".join(lines[3:]))
    summary = run(engine, folder, damaged)
    assert summary["skipped"] == 2 and summary["dropped"] == len(lines) - 2 and summary["written"] == len(lines) - 2
    assert f"line 3 is cut short or not a result; it and the {len(lines) - 3} lines after it" in capsys.readouterr().err
    assert damaged.read_bytes() == full.read_bytes()


def test_repeated_images_are_encoded_once(checkpoint, job, tmp_path, monkeypatch):
    engine = load_engine(EngineConfig(model=str(checkpoint), device="cpu", dtype="float32", exact=True))
    calls = []
    original = engine.model.get_image_embeddings
    monkeypatch.setattr(engine.model, "get_image_embeddings", lambda pv: calls.append(1) or original(pv))
    folder, _ = job
    run(engine, folder, tmp_path / "out.jsonl")
    assert len(calls) == 2  # the cat and the cup


def test_missing_columns_are_recorded_per_row(engine, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("image,input_points\nabc,[[[1, 1]]]\n")
    rows = list(read_rows(bad))
    assert len(rows) == 1 and "lacks columns" in rows[0].problem
    run(engine, bad, tmp_path / "out.jsonl")
    (line,) = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert "lacks columns" in line["error"]["error"]


@pytest.mark.parametrize("data", [b"\xff\xfeimage\n", ",".join(BATCH_HEADER).encode() + b"\nab\xe9,,,,\n"])
def test_a_csv_that_is_not_utf8_is_named_before_any_row_runs(tmp_path, data):
    """Its header or a later row: the message names the file (it was the codec's words only)."""
    (tmp_path / "a.csv").write_text(",".join(BATCH_HEADER) + "\n")
    (tmp_path / "b.csv").write_bytes(data)
    with pytest.raises(ValueError, match=r"b\.csv is not UTF-8 text \(.*\); save it as a UTF-8 CSV"):
        list(read_rows(tmp_path))


def test_everything_mode(engine, job, tmp_path):
    from sam_demo.engine.automatic_mask_generator import EverythingConfig

    folder, _ = job
    output = tmp_path / "everything.jsonl"
    config = EverythingConfig(points_per_side=4, pred_iou_thresh=0.3, stability_score_thresh=0.2)
    run_job(
        folder,
        output,
        lambda rows: run_local(rows, engine, FetchPolicy(), config),
        progress=False,
        predictions_csv=tmp_path / "predictions.csv",
    )
    lines = [json.loads(x) for x in output.read_text().splitlines()]
    assert len(lines) == 6 and "error" in lines[4]  # the row with a broken image
    first = lines[0]["everything"]
    assert (first["width"], first["height"]) == (451, 300) and first["annotations"]
    assert {"segmentation", "bbox", "area", "predicted_iou", "stability_score"} <= set(first["annotations"][0])
    assert "everything" in json.loads(next(csv.reader(open(tmp_path / "predictions.csv")))[2])
