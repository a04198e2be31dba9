"""Packaging: pyproject.toml declares what the requirements files do (`pip install .[dev]` equals
`-r requirements-dev.txt`), and the wheel holds the package with its data, which an installed app uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import time
import tomllib
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.support.photos import PHOTOS
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parent.parent


def requirement_lines(name: str) -> list[str]:
    """The file's requirements, following `-r`, without comments."""
    out = []
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            out += requirement_lines(line[3:].strip())
        elif line:
            out.append(line)
    return out


def test_extras_match_the_requirements_files():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = requirement_lines("requirements.txt")
    extras = project["optional-dependencies"]
    assert sorted(base + extras["ray"]) == sorted(requirement_lines("requirements-ray.txt"))
    assert sorted(base + extras["dev"]) == sorted(requirement_lines("requirements-dev.txt"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The package's wheel, built from this checkout as `pip wheel . --no-deps` builds it."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("sam_demo-*.whl")
    return path


def test_the_wheel_holds_the_package_and_its_data_not_the_benchmarks_or_tests(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {name.split("/")[0] for name in names if ".dist-info/" not in name} == {"sam_demo"}
    photos = sorted(p.name for p in PHOTOS.iterdir())
    assert photos and {f"sam_demo/demo/examples/{name}" for name in photos} <= names
    static = PHOTOS.parent / "static"
    files = [p for p in static.rglob("*") if p.is_file()]
    assert any(p.parent != static for p in files), "the page script's parts (static/prompter/) too"
    assert {f"sam_demo/demo/static/{p.relative_to(static).as_posix()}" for p in files} <= names
    assert not any(name.startswith(("benchmarks/", "tests/")) or "/bench" in name for name in names)


def test_the_installed_app_shows_the_examples(wheel, checkpoint, tmp_path):
    """Installed into a fresh venv (its dependencies seen through a .pth file, so nothing is downloaded)
    and started from elsewhere, `sam-demo` offers every example photo, served from the package."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site,) = (venv / "lib").glob("python3*/site-packages")
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "-q",
            "--no-deps",
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    server = subprocess.Popen(
        [str(venv / "bin" / "sam-demo"), "--model", str(checkpoint), "--port", str(port), "--dtype", "float32"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the installed app did not start"
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        health = httpx.get(url + "/health").json()
        assert health["model"] == str(checkpoint)
        config = httpx.get(url + "/config").json()
        props = [c["props"]["props"] for c in config["components"] if "examples" in c.get("props", {}).get("props", {})]
        examples = [json.loads(p["examples"]) for p in props]
        assert len(examples) == 1, "one set of examples, in the prompter's empty stage"
        assert sorted(e["name"] for e in examples[0]) == sorted(
            p.name for p in PHOTOS.glob("*") if p.suffix in (".png", ".jpg")
        )
        for example in examples[0]:
            assert example["caption"] and example["thumb"].startswith("data:image/jpeg;base64,")
            answer = httpx.get(f"{url}/sam-demo/example/{example['name']}")
            assert answer.status_code == 200 and answer.content == (PHOTOS / example["name"]).read_bytes()
        assert httpx.get(f"{url}/sam-demo/example/..%2Fapp.py").status_code == 404
    finally:
        server.terminate()
        server.wait(timeout=30)
