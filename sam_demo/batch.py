"""Run Azure ML batch-endpoint CSV jobs for SAM locally, resumably.

    python -m sam_demo.batch [--model M] [--device D] [--dtype T] [--predictions-csv P] INPUT OUTPUT

INPUT is one CSV file (header row with the endpoint's five columns, booleans written True/False,
empty cells for missing prompts) or a folder of them (read in name order). OUTPUT is JSON Lines,
one line per input row in input order: {"file", "row", "response"} or {"file", "row", "error"};
with --everything, {"file", "row", "everything": {"width", "height", "annotations"}} (COCO RLE).

A bad row is recorded and the run goes on. Re-running with the same OUTPUT resumes: rows already
written are skipped; a line cut short by a crash is dropped and redone. Repeated images hit the
engine's embedding cache, so each distinct image is encoded once.

torch and the model code are imported when they are first needed, inside `main`'s handling of
Ctrl-C, so an interrupt at any moment ends with one line, not a traceback.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .cli import add_engine_flags, engine_config, fetch_policy
from .endpoint import COLUMNS, EndpointRow, RequestError, parse_row
from .fetch import FetchPolicy

if TYPE_CHECKING:
    from .engine import SamEngine
    from .everything import EverythingConfig
    from .loading import EngineConfig

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
            header = reader.fieldnames or []
            missing = [c for c in COLUMNS if c not in header]
            for i, record in enumerate(reader):
                if missing:
                    yield BatchRow(file.name, i, None, f"the CSV header lacks columns {missing}; it has {header}")
                else:
                    yield BatchRow(file.name, i, {c: record[c] if record[c] is not None else "" for c in COLUMNS})


def run_row(row: BatchRow, engine: SamEngine, policy: FetchPolicy, everything: EverythingConfig | None = None) -> dict:
    """The output line for one row: its response (or "everything" masks), or its error.

    Never raises for bad input. With `everything`, the row's prompts are ignored and the
    line holds {"width", "height", "annotations": COCO annotations with RLE}.
    """
    from .everything import coco_result, generate
    from .scoring import load_row_image, predict_row

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


def done_keys(output: Path) -> tuple[set[tuple[str, int]], int]:
    """Rows already in OUTPUT, and how many lines were dropped from it.

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
                keys.add((record["file"], record["row"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                break
            good_bytes += len(line)
        dropped = (lines - len(keys)) + sum(1 for _ in handle)
    if good_bytes != output.stat().st_size:
        with open(output, "r+b") as handle:
            handle.truncate(good_bytes)
    return keys, dropped


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
    from tqdm import tqdm

    all_rows = list(read_rows(input_path))
    done, dropped = done_keys(output)
    if dropped:
        print(
            f"{output}: line {len(done) + 1} is cut short or not a result; it and the {dropped - 1} lines after it "
            "were dropped, and their rows are computed again",
            file=sys.stderr,
        )
    todo = [r for r in all_rows if r.key not in done]
    output.parent.mkdir(parents=True, exist_ok=True)
    errors = 0
    with (
        open(output, "a", encoding="utf-8") as sink,
        tqdm(total=len(todo), unit="row", disable=not progress, desc="SAM batch") as bar,
    ):
        for record in results_for(todo):
            sink.write(json.dumps(record) + "\n")
            sink.flush()
            os.fsync(sink.fileno())
            errors += "error" in record
            bar.update(1)
    if predictions_csv is not None:
        write_predictions_csv(output, predictions_csv)
    return {
        "rows": len(all_rows),
        "skipped": len(all_rows) - len(todo),
        "written": len(todo),
        "errors": errors,
        "dropped": dropped,
    }


def main(argv: list[str] | None = None) -> None:
    try:
        _main(argv)
    except KeyboardInterrupt:  # while importing, loading the model, or running rows
        print("\ninterrupted; rows written so far are kept. Run the same command again to resume.", file=sys.stderr)
        raise SystemExit(130) from None


def _main(argv: list[str] | None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path, help="a batch CSV file or a folder of them")
    parser.add_argument("output", type=Path, help="JSON Lines output (resumed if it exists)")
    add_engine_flags(parser)
    parser.add_argument(
        "--predictions-csv", type=Path, default=None, help="also write Azure-style predictions.csv (valid JSON)"
    )
    parser.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: this process; ray: a Ray Data actor pool (pip install -r requirements-ray.txt)",
    )
    parser.add_argument(
        "--ray-address", default=None, help="Ray cluster address (default: $RAY_ADDRESS or a local Ray)"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="Ray actors, one model each (default: one per GPU, or 1)"
    )
    parser.add_argument(
        "--everything",
        action="store_true",
        help="segment everything in each row's image (prompts ignored); lines hold COCO RLE annotations",
    )
    parser.add_argument("--points-per-side", type=int, default=32, help="with --everything: grid size (default 32)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    from .cli import exit_with_message
    from .everything import EverythingConfig
    from .loading import ModelLoadError, load_engine

    config, policy = engine_config(args), fetch_policy(args)
    try:
        input_files(args.input)
        everything = EverythingConfig(points_per_side=args.points_per_side) if args.everything else None
        if args.engine == "ray":
            results_for = _ray_runner(config, policy, args.workers, args.ray_address, everything)
        else:
            engine = load_engine(config)
            results_for = lambda rows: run_local(rows, engine, policy, everything)  # noqa: E731
        summary = run_job(args.input, args.output, results_for, args.predictions_csv, progress=not args.no_progress)
    except (ModelLoadError, ValueError) as exc:
        exit_with_message(exc)
    print(
        f"{summary['written']} rows written ({summary['errors']} with errors), {summary['skipped']} already done, "
        f"to {args.output}"
    )


def _ray_runner(
    config: EngineConfig,
    policy: FetchPolicy,
    workers: int | None,
    address: str | None,
    everything: EverythingConfig | None,
):
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        raise ValueError(f"--engine ray needs Ray: pip install -r requirements-ray.txt ({exc})") from None
    from .batch_ray import run_ray

    return lambda rows: run_ray(rows, config, policy, workers, address, everything=everything)


if __name__ == "__main__":
    main()
