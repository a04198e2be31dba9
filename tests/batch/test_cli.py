"""The batch command (`python -m sam_demo.batch`): a whole job, a missing model, Ctrl-C at any moment."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from tests.support.servers import REPOSITORY


def test_command_line(checkpoint, job, tmp_path):
    folder, _ = job
    output = tmp_path / "cli.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sam_demo.batch",
            "--model",
            str(checkpoint),
            "--dtype",
            "float32",
            "--no-progress",
            str(folder),
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "6 rows written (2 with errors)" in done.stdout and len(output.read_text().splitlines()) == 6
    missing = subprocess.run(
        [sys.executable, "-m", "sam_demo.batch", "--model", str(tmp_path / "nope"), str(folder), str(output)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.parametrize("after_s", [0.6, 1.5, 4.0])
def test_ctrl_c_at_any_moment_ends_with_one_line_not_a_traceback(checkpoint, job, tmp_path, after_s):
    """While importing torch, loading the model, or running rows (segment everything: slow enough)."""
    folder, _ = job
    command = [
        sys.executable,
        "-m",
        "sam_demo.batch",
        str(folder),
        str(tmp_path / "out.jsonl"),
        "--everything",
        "--model",
        str(checkpoint),
        "--no-progress",
    ]
    process = subprocess.Popen(command, cwd=REPOSITORY, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(after_s)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    if "rows written" in out:
        pytest.skip(f"the job finished within {after_s} s")
    assert process.returncode == 130 and "Traceback" not in err and "Run the same command again to resume" in err
