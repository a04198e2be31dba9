"""The batch job: Azure ML batch-endpoint CSV rows for SAM, answered in order, resumably.

INPUT is one CSV file (header row with the endpoint's five columns, booleans written True/False,
empty cells for missing prompts) or a folder of them (read in name order). OUTPUT is JSON Lines,
one line per input row in input order: {"file", "row", "response"} or {"file", "row", "error"};
with --everything, {"file", "row", "everything": {"width", "height", "annotations"}} (COCO RLE).

A bad row is recorded and the run goes on. Re-running with the same OUTPUT resumes: rows already
written are skipped; a line cut short by a crash is dropped and redone. Repeated images hit the
engine's embedding cache, so each distinct image is encoded once. `run_job` takes the function
that answers rows: `run_local` (an engine in this process) or `ray_runner.run_ray`.

torch and the model code are imported when first needed, so the command (cli.py) can handle
Ctrl-C from its first moment.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sam_demo.endpoint.fetch import FetchPolicy
from sam_demo.endpoint.wire import COLUMNS, EndpointRow, RequestError, parse_row

if TYPE_CHECKING:
    from sam_demo.engine.automatic_mask_generator import EverythingConfig
    from sam_demo.engine.sam_engine import SamEngine

csv.field_size_limit(sys.maxsize)  # base64 images make very long cells


@dataclass(frozen=True)
class BatchRow:
    """One CSV data row. row: 0-based index among the file's data rows (header excluded)."""

    file: str
    row: int
    values: dict | None  # column -> cell text; None if the file itself is unusable
    problem: str | None = None

    @property
    def key(self) -> tuple[str, int]:
        return self.file, self.row


def input_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".csv")
        if not files:
            raise ValueError(f"no .csv files in folder {path}")
        return files
    if not path.exists():
        raise ValueError(f"input {path} does not exist")
    return [path]


def read_rows(path: Path) -> Iterator[BatchRow]:
    """Yield every data row of the CSV files under `path`, in order."""
    for file in input_files(path):
        with open(file, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            try:
                header = reader.fieldnames or []
                missing = [c for c in COLUMNS if c not in header]
                for i, record in enumerate(reader):
                    if missing:
                        yield BatchRow(file.name, i, None, f"the CSV header lacks columns {missing}; it has {header}")
                    else:
                        yield BatchRow(file.name, i, {c: record[c] if record[c] is not None else "" for c in COLUMNS})
            except UnicodeDecodeError as exc:
                raise ValueError(f"{file} is not UTF-8 text ({exc}); save it as a UTF-8 CSV") from None


def run_row(row: BatchRow, engine: SamEngine, policy: FetchPolicy, everything: EverythingConfig | None = None) -> dict:
    """The output line for one row: its response (or "everything" masks), or its error.

    Never raises for bad input. With `everything`, the row's prompts are ignored and the
    line holds {"width", "height", "annotations": COCO annotations with RLE}.
    """
    from sam_demo.endpoint.scoring import load_row_image, predict_row
    from sam_demo.engine.automatic_mask_generator import coco_result, generate

    out = {"file": row.file, "row": row.row}
    try:
        if row.values is None:
            raise RequestError(row.problem or "unusable row", row.row)
        if everything is not None:
            image = EndpointRow(row.values["image"].strip(), None, None, None, False)
            rgb = load_row_image(image, row.row, engine, policy)
            masks = generate(engine, rgb, everything)
            out["everything"] = coco_result(rgb.shape[:2], masks)
        else:
            out["response"] = predict_row(parse_row(row.values, row.row), row.row, engine, policy)
    except RequestError as exc:
        out["error"] = exc.to_json()
    except Exception as exc:  # a broken row must not stop the job
        out["error"] = {"error": f"internal error: {type(exc).__name__}: {exc}", "row": row.row, "column": None}
    return out


def done_keys(output: Path, key=lambda record: (record["file"], record["row"])) -> tuple[set, int]:
    """Rows already in OUTPUT (`key` of each line's record), and how many lines were dropped from it.

    OUTPUT is cut at its first line that is incomplete (a crash mid-write) or not a result; the
    lines after that one go too (their rows are computed again), and the count says so.
    """
    if not output.exists():
        return set(), 0
    keys, good_bytes, lines = set(), 0, 0
    with open(output, "rb") as handle:
        for line in handle:
            lines += 1
            if not line.endswith(b"\n"):
                break
            try:
                record = json.loads(line)
                keys.add(key(record))
            except (json.JSONDecodeError, KeyError, TypeError):
                break
            good_bytes += len(line)
        dropped = (lines - len(keys)) + sum(1 for _ in handle)
    if good_bytes != output.stat().st_size:
        with open(output, "r+b") as handle:
            handle.truncate(good_bytes)
    return keys, dropped


def append_records(output: Path, records, total: int, unit: str, desc: str, progress: bool = True):
    """Append each record to OUTPUT as a JSON line, flushed and fsynced before the next (so a crash
    loses at most the line being written), with a progress bar; yield each once it is on disk."""
    from tqdm import tqdm

    output.parent.mkdir(parents=True, exist_ok=True)
    with (
        open(output, "a", encoding="utf-8") as sink,
        tqdm(total=total, unit=unit, disable=not progress, desc=desc) as bar,
    ):
        for record in records:
            sink.write(json.dumps(record) + "\n")
            sink.flush()
            os.fsync(sink.fileno())
            bar.update(1)
            yield record


def write_predictions_csv(output: Path, target: Path) -> None:
    """Azure-style predictions.csv (no header): file, row, and the row's result as valid JSON."""
    with open(output, encoding="utf-8") as source, open(target, "w", newline="", encoding="utf-8") as sink:
        writer = csv.writer(sink)
        for line in source:
            record = json.loads(line)
            result = {k: record[k] for k in ("response", "everything", "error") if k in record}
            if "response" in result:
                result["response"] = result["response"]["response"]
            writer.writerow([record["file"], record["row"], json.dumps(result)])


def run_local(
    rows: list[BatchRow], engine: SamEngine, policy: FetchPolicy, everything: EverythingConfig | None = None
) -> Iterator[dict]:
    for row in rows:
        yield run_row(row, engine, policy, everything)


def run_job(
    input_path: Path, output: Path, results_for, predictions_csv: Path | None = None, progress: bool = True
) -> dict:
    """Run (or resume) a job. `results_for(rows)` yields one output dict per row, in order."""

    all_rows = list(read_rows(input_path))
    done, dropped = done_keys(output)
    if dropped:
        print(
            f"{output}: line {len(done) + 1} is cut short or not a result; it and the {dropped - 1} lines after it "
            "were dropped, and their rows are computed again",
            file=sys.stderr,
        )
    todo = [r for r in all_rows if r.key not in done]
    errors = 0
    for record in append_records(output, results_for(todo), len(todo), "row", "SAM batch", progress):
        errors += "error" in record
    if predictions_csv is not None:
        write_predictions_csv(output, predictions_csv)
    return {
        "rows": len(all_rows),
        "skipped": len(all_rows) - len(todo),
        "written": len(todo),
        "errors": errors,
        "dropped": dropped,
    }
