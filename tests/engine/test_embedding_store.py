"""The embedding store on disk: entries served bit-exact, damaged ones never served, the bound kept
with several writers, and every failure turning the store off rather than the server."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sam_demo import EngineConfig, load_engine
from sam_demo.engine.embedding_store import FORMAT, EmbeddingStore
from sam_demo.engine.loading import store_namespace
from sam_demo.engine.sam_engine import image_key
from sam_demo.engine.utils.digests import module_digest
from tests.support.photos import asset

SHAPE = (1, 256, 64, 64)
CLICK = {"points_xy": np.array([[[200.0, 150.0]]]), "labels": np.array([[1]])}


def store_engine(checkpoint, store: Path, **config):
    """A freshly loaded exact-mode engine on `store` (an empty memory cache: as after a restart),
    counting its encoder's runs in `engine.vit_runs`."""
    fields = {
        "model": str(checkpoint),
        "device": "cpu",
        "dtype": "float32",
        "exact": True,
        "embedding_store": str(store),
    }
    engine = load_engine(EngineConfig(**(fields | config)))
    engine.vit_runs = 0
    vit = engine._vit

    def counted(pixel_values):
        engine.vit_runs += 1
        return vit(pixel_values)

    engine._vit = counted
    return engine


def entry_files(store: Path) -> list[Path]:
    return sorted(store.glob("*.safetensors"))


@pytest.fixture
def store(tmp_path) -> Path:
    return tmp_path / "store"


@pytest.fixture(scope="module")
def fresh(checkpoint, tmp_path_factory):
    """Masks, scores and low-res logits of a click on a freshly encoded image, with no store."""
    engine = load_engine(EngineConfig(model=str(checkpoint), device="cpu", dtype="float32", exact=True))
    return engine.decode(engine.embed(asset("chelsea.png")), **CLICK)


def assert_same_prediction(a, b):
    for field in ("masks", "iou_scores", "low_res_logits"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_a_stored_embedding_gives_masks_bit_equal_to_a_fresh_encode_with_no_encoder_run(checkpoint, store, fresh):
    first = store_engine(checkpoint, store)
    assert_same_prediction(first.decode(first.embed(asset("chelsea.png")), **CLICK), fresh)
    assert first.vit_runs == 1 and len(entry_files(store)) == 1

    restarted = store_engine(checkpoint, store)
    embedding, computed = restarted.embed_with_status(asset("chelsea.png"))
    assert computed and embedding.from_store and restarted.vit_runs == 0
    assert embedding.features.dtype == torch.float32
    assert_same_prediction(restarted.decode(embedding, **CLICK), fresh)
    stats = restarted.store.stats()
    assert (stats.hits, stats.misses, stats.writes, stats.entries) == (1, 0, 0, 1)
    # the memory cache in front of it: the next embed reads nothing from disk
    assert restarted.embed_with_status(asset("chelsea.png"))[1] is False and restarted.store.stats().hits == 1


def test_a_store_hit_needs_no_pixels(checkpoint, store):
    store_engine(checkpoint, store).embed(asset("coffee.png"))
    restarted = store_engine(checkpoint, store)

    def no_pixels():
        raise AssertionError("a stored embedding's pixels were loaded")

    embedding = restarted.embed_by_key(image_key(asset("coffee.png")), no_pixels)
    assert embedding.from_store and embedding.geometry.original_hw == asset("coffee.png").shape[:2]


def flip_payload_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1000] ^= 0x10
    path.write_bytes(bytes(data))


def flip_header_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    at = data.index(b'"checksum":"') + len(b'"checksum":"')
    data[at] = ord("0") if data[at] != ord("0") else ord("1")
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def empty(path: Path) -> None:
    path.write_bytes(b"")


def garbage_header(path: Path) -> None:
    path.write_bytes((10**12).to_bytes(8, "little") + b"{}")


def symlink_elsewhere(path: Path) -> None:
    outside = path.parent.parent / "outside.safetensors"
    os.replace(path, outside)
    path.symlink_to(outside)


@pytest.mark.parametrize(
    "damage", [flip_payload_byte, flip_header_byte, truncate, empty, garbage_header, symlink_elsewhere]
)
def test_a_damaged_entry_is_deleted_counted_and_encoded_again_with_the_same_answer(checkpoint, store, fresh, damage):
    store_engine(checkpoint, store).embed(asset("chelsea.png"))
    (entry,) = entry_files(store)
    damage(entry)

    restarted = store_engine(checkpoint, store)
    embedding = restarted.embed(asset("chelsea.png"))
    assert not embedding.from_store and restarted.vit_runs == 1
    assert_same_prediction(restarted.decode(embedding, **CLICK), fresh)
    stats = restarted.store.stats()
    assert (stats.corrupt, stats.writes) == (1, 1)
    assert not entry.is_symlink() and store_engine(checkpoint, store).embed(asset("chelsea.png")).from_store
    if damage is symlink_elsewhere:  # the link was removed, never followed: its target is untouched
        assert (store.parent / "outside.safetensors").stat().st_size > 0


def test_two_entries_swapped_are_never_served_for_each_other(checkpoint, store):
    writer = store_engine(checkpoint, store)
    cat, cup = writer.embed(asset("chelsea.png")), writer.embed(asset("coffee.png"))
    cat_path, cup_path = writer.store._path(cat.key), writer.store._path(cup.key)
    os.replace(cat_path, store / "tmp")
    os.replace(cup_path, cat_path)
    os.replace(store / "tmp", cup_path)

    restarted = store_engine(checkpoint, store)
    for image, before in (("chelsea.png", cat), ("coffee.png", cup)):
        embedding = restarted.embed(asset(image))
        assert not embedding.from_store
        assert torch.equal(embedding.features, before.features)
    assert restarted.store.stats().corrupt == 2 and restarted.vit_runs == 2


def test_an_entry_of_a_future_format_is_skipped_and_left_alone(checkpoint, store, caplog):
    writer = store_engine(checkpoint, store)
    key = writer.embed(asset("chelsea.png")).key
    path = writer.store._path(key)
    data = path.read_bytes()
    future = data.replace(f'"format":"{FORMAT}"'.encode(), f'"format":"{FORMAT + 1}"'.encode())
    assert future != data
    path.write_bytes(future)

    restarted = store_engine(checkpoint, store)
    with caplog.at_level(logging.WARNING, logger="sam_demo"):
        assert restarted.store.get(key, SHAPE, torch.float32) is None
    assert "format version 2" in caplog.text and path.read_bytes() == future
    assert restarted.store.stats().skipped == 1 and restarted.store.stats().corrupt == 0


def test_two_plans_or_two_models_sharing_a_folder_never_read_each_others_entries(checkpoint, tmp_path, store):
    from sam_demo.engine.random_sam import write_random_checkpoint

    exact = store_engine(checkpoint, store)
    exact.embed(asset("chelsea.png"))
    fast_bf16 = store_engine(checkpoint, store, exact=False, dtype="bfloat16")
    assert not fast_bf16.embed(asset("chelsea.png")).from_store and fast_bf16.vit_runs == 1
    other = write_random_checkpoint(tmp_path / "other", arch="tiny", seed=1)
    other_model = store_engine(other, store)
    assert not other_model.embed(asset("chelsea.png")).from_store and other_model.vit_runs == 1
    assert len(entry_files(store)) == 3
    # the fast float32 mode's torch ViT is the exact mode's: their entries are the same bits, shared
    fast_fp32 = store_engine(checkpoint, store, exact=False, encoder="torch")
    assert fast_fp32.embed(asset("chelsea.png")).from_store and fast_fp32.vit_runs == 0


def test_the_weights_digest_names_the_weights_not_the_folder(checkpoint, tmp_path):
    from transformers import SamModel

    model = SamModel.from_pretrained(checkpoint)
    model.save_pretrained(tmp_path / "copy")
    copy = SamModel.from_pretrained(tmp_path / "copy")
    assert module_digest(model.vision_encoder) == module_digest(copy.vision_encoder)
    with torch.no_grad():
        copy.vision_encoder.neck.conv1.weight[0, 0, 0, 0] += 1e-6
    assert module_digest(model.vision_encoder) != module_digest(copy.vision_encoder)


def entry(value: float) -> torch.Tensor:
    return torch.full(SHAPE, float(value))


def test_the_bound_holds_and_the_newest_entries_stay(store):
    probe = EmbeddingStore(store, 1 << 30, "n")
    probe.put("probe", entry(0), (10, 10))
    (path,) = entry_files(store)
    size = path.stat().st_size  # an entry on disk: the 4 MiB tensor and its header
    assert size > 4 << 20
    path.unlink()

    bounded = EmbeddingStore(store, 10 * size, "n")
    for i in range(30):
        bounded.put(f"image-{i}", entry(i), (10, 10))
        assert bounded.stats().bytes <= 10 * size
        if i % 3 == 0:  # a read makes an entry recently used
            assert bounded.get("image-0", SHAPE, torch.float32) is not None
    stats = bounded.stats()
    assert (stats.entries, stats.writes, stats.evictions) == (10, 30, 20)
    assert bounded.get("image-0", SHAPE, torch.float32) is not None  # read often: kept
    kept = [i for i in range(30) if bounded.get(f"image-{i}", SHAPE, torch.float32) is not None]
    assert kept == [0, *range(21, 30)]
    assert torch.equal(bounded.get("image-29", SHAPE, torch.float32).features, entry(29))


WRITER = """
import sys
import numpy as np
from sam_demo import EngineConfig, load_engine
from tests.support.photos import asset
engine = load_engine(EngineConfig(model=sys.argv[1], device="cpu", dtype="float32", exact=True, embedding_store=sys.argv[2]))
base = asset("chelsea.png")
for i in range(8):
    image = base.copy()
    image[0, 0] = i
    engine.embed(image)
print(engine.store.stats().writes)
"""


def test_two_processes_encoding_the_same_images_at_once_leave_one_valid_entry_each(checkpoint, store):
    root = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-c", WRITER, str(checkpoint), str(store)]
    processes = [subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert all(p.returncode == 0 for p in processes), outputs
    assert len(entry_files(store)) == 8 and not list(store.glob(".tmp-*"))
    reader = store_engine(checkpoint, store)
    base = asset("chelsea.png")
    for i in range(8):
        image = base.copy()
        image[0, 0] = i
        assert reader.embed(image).from_store
    assert reader.store.stats().corrupt == 0 and reader.vit_runs == 0


def test_a_folder_that_is_a_file_is_an_error_at_start(checkpoint, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        load_engine(EngineConfig(model=str(checkpoint), device="cpu", embedding_store=str(tmp_path / "file")))


def test_a_missing_folder_is_created_and_a_zero_bound_means_no_store(checkpoint, tmp_path):
    nested = tmp_path / "a" / "b" / "store"
    assert store_engine(checkpoint, nested).store.enabled and nested.is_dir()
    engine = load_engine(
        EngineConfig(model=str(checkpoint), device="cpu", embedding_store=str(tmp_path / "x"), embedding_store_bytes=0)
    )
    assert engine.store is None and not (tmp_path / "x").exists()


def refuse_writes(code: int):
    real_open = os.open

    def guarded(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args, **kwargs)

    return guarded


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_a_read_only_folder_turns_the_store_off_with_a_warning(checkpoint, store, monkeypatch, caplog, code):
    monkeypatch.setattr("sam_demo.engine.embedding_store.os.open", refuse_writes(code))
    with caplog.at_level(logging.WARNING, logger="sam_demo"):
        engine = store_engine(checkpoint, store)
    assert not engine.store.enabled and "embedding store off" in caplog.text
    assert engine.embed(asset("chelsea.png")).features.shape == SHAPE  # served from memory
    assert engine.store.stats().disabled_reason.startswith("the folder")


def test_a_full_disk_turns_the_store_off_once_and_serving_goes_on(checkpoint, store, monkeypatch, caplog):
    engine = store_engine(checkpoint, store)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("sam_demo.engine.embedding_store.os.fsync", full)
    with caplog.at_level(logging.WARNING, logger="sam_demo"):
        engine.embed(asset("chelsea.png"))
        engine.embed(asset("coffee.png"))
    assert caplog.text.count("embedding store off") == 1 and "No space left" in caplog.text
    assert not engine.store.enabled and engine.store.stats().writes == 0
    assert not entry_files(store) and not list(store.glob(".tmp-*"))  # the temp file was removed


def test_the_store_removed_while_serving_is_made_again(checkpoint, store):
    import shutil

    engine = store_engine(checkpoint, store)
    engine.embed(asset("chelsea.png"))
    shutil.rmtree(store)
    engine.cache.clear()
    embedding = engine.embed(asset("chelsea.png"))
    assert not embedding.from_store and engine.vit_runs == 2
    assert engine.store.enabled and len(entry_files(store)) == 1 and engine.store.stats().misses == 2


def test_stale_temp_files_of_a_crashed_writer_are_removed_and_fresh_ones_kept(store):
    store.mkdir()
    old, new = store / ".tmp-abc-1-ffff", store / ".tmp-abc-2-ffff"
    old.write_bytes(b"partial")
    new.write_bytes(b"partial")
    os.utime(old, (0, 0))
    EmbeddingStore(store, 1 << 30, "n")
    assert not old.exists() and new.exists()


def test_a_planted_non_entry_never_counts_and_a_fifo_never_blocks(store):
    bounded = EmbeddingStore(store, 1 << 30, "n")
    os.mkfifo(bounded._path("fifo"))
    (store / "notes.txt").write_text("not an entry")
    assert bounded.get("fifo", SHAPE, torch.float32) is None
    assert bounded.stats().corrupt == 1 and bounded.stats().entries == 0


def test_metadata_records_what_the_entry_is(checkpoint, store):
    engine = store_engine(checkpoint, store)
    key = engine.embed(asset("chelsea.png")).key
    data = engine.store._path(key).read_bytes()
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    assert header["features"]["dtype"] == "F32" and header["features"]["shape"] == list(SHAPE)
    meta = header["__metadata__"]
    assert meta["image_key"] == key and meta["original_hw"] == "300,451" and meta["format"] == str(FORMAT)
    assert meta["namespace"] == store_namespace(meta["namespace"].split(";")[0].removeprefix("weights="), engine.plan)
    assert "device=cpu;encoder=torch;vit=float32/float32" in meta["namespace"]


def rewrite_header(path: Path, edit) -> None:
    """Rewrite the entry's JSON header through `edit(header) -> header` (the payload kept)."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.dumps(edit(json.loads(data[8 : 8 + n]))).encode()
    header += b" " * (-len(header) % 8)
    path.write_bytes(len(header).to_bytes(8, "little") + header + data[8 + n :])


@pytest.mark.parametrize(
    "edit",
    [
        lambda h: {**h, "__metadata__": "a string"},
        lambda h: {**h, "__metadata__": ["a", "list"]},
        lambda h: [h],
        lambda h: {**h, "__metadata__": {**h["__metadata__"], "original_hw": "301,451"}},  # a flipped digit
        lambda h: {**h, "__metadata__": {**h["__metadata__"], "original_hw": "60000,60000"}},
        lambda h: {**h, "__metadata__": {**h["__metadata__"], "format": 1}},
    ],
    ids=["metadata-string", "metadata-list", "header-list", "size-flipped", "size-huge", "format-int"],
)
def test_a_header_that_lies_is_never_served(checkpoint, store, fresh, edit):
    store_engine(checkpoint, store).embed(asset("chelsea.png"))
    (entry,) = entry_files(store)
    rewrite_header(entry, edit)
    restarted = store_engine(checkpoint, store)
    embedding = restarted.embed(asset("chelsea.png"))
    assert not embedding.from_store and embedding.geometry.original_hw == (300, 451)
    assert_same_prediction(restarted.decode(embedding, **CLICK), fresh)
    assert restarted.store.stats().corrupt == 1


def test_a_header_nested_deeply_is_a_bad_entry(checkpoint, store):
    writer = store_engine(checkpoint, store)
    key = writer.embed(asset("chelsea.png")).key
    header = b"[" * 60_000
    writer.store._path(key).write_bytes(len(header).to_bytes(8, "little") + header)
    assert writer.store.get(key, SHAPE, torch.float32) is None and writer.store.stats().corrupt == 1


def test_a_valid_entry_for_another_size_is_dropped_by_the_engine(checkpoint, store, fresh):
    """An entry whose checksum holds but whose image size is not the image's (a store written by a
    broken writer): the engine checks the size it knows, drops the entry and encodes."""
    writer = store_engine(checkpoint, store)
    embedding = writer.embed(asset("chelsea.png"))
    assert writer.store.put(embedding.key, embedding.features, (40, 30))
    restarted = store_engine(checkpoint, store)
    again = restarted.embed(asset("chelsea.png"))
    assert not again.from_store and again.geometry.original_hw == (300, 451)
    assert_same_prediction(restarted.decode(again, **CLICK), fresh)
    stats = restarted.store.stats()
    assert (stats.corrupt, stats.hits, stats.misses, stats.writes) == (1, 0, 1, 1)


def test_the_users_own_files_in_the_folder_are_never_counted_or_evicted(checkpoint, store):
    store.mkdir()
    (store / "model.safetensors").write_bytes(b"x" * (6 << 20))
    (store / "notes.txt").write_text("mine")
    bounded = EmbeddingStore(store, 9 << 20, "n")
    for i in range(5):
        bounded.put(f"image-{i}", entry(i), (10, 10))
    assert (store / "model.safetensors").stat().st_size == 6 << 20 and (store / "notes.txt").exists()
    stats = bounded.stats()
    assert stats.entries == 2 and stats.bytes <= 9 << 20


def test_a_folder_under_an_entrys_name_leaks_nothing_and_breaks_nothing(store):
    bounded = EmbeddingStore(store, 1 << 30, "n")
    planted = bounded._path("image")
    planted.mkdir()
    (planted / "inside").write_text("x")
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        assert bounded.get("image", SHAPE, torch.float32) is None
        assert bounded.put("image", entry(1), (10, 10)) is False
    assert len(os.listdir("/proc/self/fd")) <= before + 2
    assert bounded.enabled and (planted / "inside").exists()
    planted.joinpath("inside").unlink()  # emptied: removed at the next read, and the entry written
    assert bounded.get("image", SHAPE, torch.float32) is None and bounded.put("image", entry(1), (10, 10))
    assert torch.equal(bounded.get("image", SHAPE, torch.float32).features, entry(1))


def test_an_entry_that_cannot_be_read_now_is_a_miss_and_kept(store, monkeypatch):
    bounded = EmbeddingStore(store, 1 << 30, "n")
    bounded.put("image", entry(3), (10, 10))
    real_open = os.open

    def refused(path, flags, *args, **kwargs):
        if str(path).endswith(".safetensors") and not flags & (os.O_WRONLY | os.O_RDWR):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr("sam_demo.engine.embedding_store.os.open", refused)
    assert bounded.get("image", SHAPE, torch.float32) is None
    monkeypatch.undo()
    assert bounded.stats().corrupt == 0 and torch.equal(bounded.get("image", SHAPE, torch.float32).features, entry(3))


def test_a_future_formats_entry_is_not_overwritten(store):
    bounded = EmbeddingStore(store, 1 << 30, "n")
    bounded.put("image", entry(3), (10, 10))
    path = bounded._path("image")
    rewrite_header(path, lambda h: {**h, "__metadata__": {**h["__metadata__"], "format": str(FORMAT + 1)}})
    future = path.read_bytes()
    assert bounded.get("image", SHAPE, torch.float32) is None
    assert bounded.put("image", entry(4), (10, 10)) is False and path.read_bytes() == future


def test_an_interrupted_write_leaves_no_temp_file(store, monkeypatch):
    bounded = EmbeddingStore(store, 1 << 30, "n")

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr("sam_demo.engine.embedding_store.os.fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        bounded.put("image", entry(1), (10, 10))
    assert os.listdir(store) == [".lock"]


def test_a_lock_file_replaced_by_a_link_turns_the_store_off_saying_so(store, tmp_path):
    bounded = EmbeddingStore(store, 1 << 30, "n")
    (tmp_path / "elsewhere").write_text("not the store's")
    (store / ".lock").unlink()
    (store / ".lock").symlink_to(tmp_path / "elsewhere")
    assert bounded.put("image", entry(1), (10, 10)) is False
    assert not bounded.enabled and ".lock is not a regular file" in bounded.stats().disabled_reason
    assert (tmp_path / "elsewhere").read_text() == "not the store's"


def test_an_entry_larger_than_the_bound_is_not_written_and_says_so(store, caplog):
    bounded = EmbeddingStore(store, 1 << 20, "n")
    with caplog.at_level(logging.WARNING, logger="sam_demo"):
        assert bounded.put("image", entry(1), (10, 10)) is False
    assert "does not fit the bound" in caplog.text
