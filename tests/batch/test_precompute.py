"""`python -m sam_demo.precompute`: a folder or a CSV encoded into the store, resumably, and then
served with no encoder run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sam_demo import EngineConfig, load_engine
from sam_demo.batch.precompute import precompute_image, precompute_items
from sam_demo.endpoint.fetch import FetchPolicy
from tests.support.photos import asset
from tests.support.servers import REPOSITORY


def precompute(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "sam_demo.precompute", "--no-progress", "--dtype", "float32", *args]
    return subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def photos(tmp_path) -> Path:
    """Five distinct photos, one in a subfolder, and things that are not images."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    base = asset("rocket.jpg")[:240, :320]
    for i in range(4):
        Image.fromarray(np.roll(base, 7 * i, axis=1)).save(folder / f"{i}.png")
    Image.fromarray(asset("coffee.png")[:200, :200]).save(folder / "sub" / "cup.JPG")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    (folder / "notes.txt").write_text("not an image")
    (tmp_path / "elsewhere").mkdir()
    Image.fromarray(base).save(tmp_path / "elsewhere" / "outside.png")
    (folder / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    return folder


def test_a_folder_is_encoded_into_the_store_once_and_then_served_with_no_encode(checkpoint, photos, tmp_path):
    store = tmp_path / "store"
    first = precompute(str(photos), "--model", str(checkpoint), "--embedding-store", str(store))
    assert first.returncode == 0, first.stderr
    assert "6 images: 5 encoded, 0 already stored, 1 could not be read" in first.stdout
    assert "broken.png:" in first.stderr and "Traceback" not in first.stderr
    assert len(list(store.glob("*.safetensors"))) == 5

    again = precompute(str(photos), "--model", str(checkpoint), "--embedding-store", str(store))
    assert "6 images: 0 encoded, 5 already stored, 1 could not be read" in again.stdout

    engine = load_engine(EngineConfig(model=str(checkpoint), device="cpu", dtype="float32", embedding_store=str(store)))
    for path in sorted(photos.rglob("*.png")) + [photos / "sub" / "cup.JPG"]:
        if path.name != "broken.png":
            with Image.open(path) as image:
                assert engine.embed(image).from_store, path
    assert engine.encode_seconds is None  # the encoder never ran


def test_a_batch_csv_s_images_are_precomputed(checkpoint, job, tmp_path):
    folder, rows = job
    store = tmp_path / "store"
    done = precompute(str(folder / "a.csv"), "--model", str(checkpoint), "--embedding-store", str(store))
    assert done.returncode == 0, done.stderr
    # rows 0, 2 and 3 are the same cat: encoded once
    assert "4 images: 2 encoded, 2 already stored, 0 could not be read" in done.stdout
    bad = precompute_image({"name": "b.csv row 0", "cell": rows[4][0]}, None, FetchPolicy())
    assert bad["status"] == "error" and "base64" in bad["error"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--embedding-store-gb", "1"), "give --embedding-store DIR"),
        (("--embedding-store", "STORE", "--embedding-store-gb", "0"), "give --embedding-store DIR"),
        (("--embedding-store", "STORE", "--embedding-store-gb", "-1"), "must be from 0"),
        (("--embedding-store", "STORE", "--embedding-store-gb", "inf"), "must be from 0"),
        (("--embedding-store", "FILE"), "is a file, not a folder"),
    ],
)
def test_a_missing_or_unusable_store_is_a_one_line_error(checkpoint, photos, tmp_path, args, message):
    (tmp_path / "FILE").write_text("x")
    args = [a.replace("STORE", str(tmp_path / "s")).replace("FILE", str(tmp_path / "FILE")) for a in args]
    done = precompute(str(photos), "--model", str(checkpoint), *args)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("source", ["nowhere", "notes.txt", "empty"])
def test_a_source_that_is_not_images_says_so(tmp_path, source):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="does not exist|neither a folder|no image files"):
        precompute_items(tmp_path / source)


def test_ctrl_c_keeps_what_is_stored_and_the_next_run_resumes(checkpoint, tmp_path):
    folder, store = tmp_path / "many", tmp_path / "store"
    folder.mkdir()
    base = asset("chelsea.png")
    for i in range(40):
        Image.fromarray(np.roll(base, i, axis=0)).save(folder / f"{i:02}.png")
    command = [sys.executable, "-m", "sam_demo.precompute", str(folder), "--no-progress", "--dtype", "float32"]
    command += ["--model", str(checkpoint), "--embedding-store", str(store)]
    process = subprocess.Popen(command, cwd=REPOSITORY, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(store.glob("*.safetensors"))) < 2:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    if "40 images" in out:
        pytest.skip("the run finished before the interrupt")
    assert process.returncode == 130 and "embeddings stored so far are kept" in err and "Traceback" not in err
    stored = len(list(store.glob("*.safetensors")))
    assert 2 <= stored < 40 and not [p for p in os.listdir(store) if p.startswith(".tmp-")]
    resumed = precompute(str(folder), "--model", str(checkpoint), "--embedding-store", str(store))
    assert f"40 images: {40 - stored} encoded, {stored} already stored, 0 could not be read" in resumed.stdout


def test_precompute_on_ray_fills_the_store(checkpoint, photos, tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is optional: pip install -r requirements-ray.txt")
    from sam_demo.batch.ray_runner import map_on_ray

    store = tmp_path / "store"
    config = EngineConfig(model=str(checkpoint), device="cpu", dtype="float32", embedding_store=str(store))
    items = precompute_items(photos)
    try:
        results = list(map_on_ray(items, precompute_image, config, FetchPolicy(), workers=2))
    finally:
        ray.shutdown()
    assert [r["name"] for r in results] == [item["name"] for item in items]
    assert sorted(r["status"] for r in results) == ["encoded"] * 5 + ["error"]
    assert len(list(store.glob("*.safetensors"))) == 5


def test_a_fifo_or_a_device_is_named_not_read(checkpoint, tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    os.mkfifo(folder / "fifo.png")
    (folder / "zero.png").symlink_to("/dev/zero")
    Image.fromarray(asset("coffee.png")[:64, :64]).save(folder / "ok.png")
    done = precompute(str(folder), "--model", str(checkpoint), "--embedding-store", str(tmp_path / "s"), timeout=120)
    assert done.returncode == 0, done.stderr
    assert "3 images: 1 encoded, 0 already stored, 2 could not be read" in done.stdout
    assert "fifo.png: not a regular file" in done.stderr and "zero.png: not a regular file" in done.stderr


def test_an_entry_that_is_not_stored_is_not_told_as_encoded(checkpoint, photos, tmp_path):
    done = precompute(
        str(photos),
        "--model",
        str(checkpoint),
        "--embedding-store",
        str(tmp_path / "s"),
        "--embedding-store-gb",
        "0.001",
    )
    assert "6 images: 0 encoded, 0 already stored, 6 could not be read" in done.stdout
    assert "encoded, but not stored" in done.stderr


def test_names_with_control_characters_are_printed_escaped(checkpoint, tmp_path):
    folder = tmp_path / "names"
    folder.mkdir()
    (folder / "evil\nfake.png: all good.png").write_bytes(b"not an image")
    done = precompute(str(folder), "--model", str(checkpoint), "--embedding-store", str(tmp_path / "s"))
    assert "evil\\nfake.png: all good.png: " in done.stderr and "\nfake.png" not in done.stderr
