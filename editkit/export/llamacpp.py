"""llama.cpp itself, through its Python bindings (``pip install 'editkit[llamacpp]'``): the K-quant GGUF files
users download (Q4_K_M, Q5_K_M, Q6_K), made by llama.cpp's own quantiser from editkit's f16 file, and the
round trip through llama.cpp's reader — load a GGUF, apply the chat template stored in the file, tokenize and
generate greedily, as llama.cpp (and Ollama / LM Studio, which embed it) would.

``llama-cpp-python`` ships as a source distribution that compiles llama.cpp on install (~5 min on 2 cores), so
it is an optional extra: every function here imports it inside, and :func:`require_llama_cpp` turns its
absence into one line saying what to install — raised before any fitting when a recipe asks for a K-quant.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from editkit.errors import EditkitError

#: GGUF types made by llama.cpp's quantiser (``llama_model_quantize``) from editkit's f16 file
LLAMA_CPP_TYPES = ("q4_k_m", "q5_k_m", "q6_k")

#: their ``llama_ftype`` names in the bindings (the ``--type`` names of ``llama-quantize``)
_FTYPES = {
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
}

#: the llama.cpp round trip's bound: max |Δlogit| of llama.cpp running a GGUF file vs transformers (fp32) on the
#: safetensors export, as a share of the largest |logit|. Looser than the transformers reload check
#: (``editkit.export.gguf_file.ROUND_TRIP_BOUND``) for q8_0: llama.cpp also rounds the activations to 8 bits in
#: quantised matrix products (measured on the demo edit: f16 0.24 %, q8_0 5.9 %, q4_k_m 21.5 %; on
#: qwen-coder-1.5b: f16 0.32 %, q4_k_m 59 %, with the same top token at 100 % and 95 % of the positions)
LLAMA_CPP_BOUND = {"f16": 0.01, "bf16": 0.05, "q8_0": 0.1, "q6_k": 0.3, "q5_k_m": 0.75, "q4_k_m": 0.75}

INSTALL_HINT = (
    "pip install 'editkit[llamacpp]' (llama-cpp-python: builds llama.cpp from source, ~5 min on 2 cores)"
)


def llama_cpp_available() -> bool:
    try:
        import llama_cpp  # noqa: F401 - optional extra: compiled llama.cpp, not a hard dependency
    except ImportError:
        return False
    return True


def require_llama_cpp(field: str, kind: str) -> None:
    """One EditkitError line when ``kind`` needs llama.cpp and its bindings are not installed."""
    if kind in LLAMA_CPP_TYPES and not llama_cpp_available():
        raise EditkitError(
            f"{field}: {kind} is made by llama.cpp's own quantiser; install it: {INSTALL_HINT}"
        )


def _quiet() -> None:
    """llama.cpp logs every tensor it touches to stderr; the bindings route its log through this logger."""
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)


def quantize(src: str | Path, dest: str | Path, kind: str, threads: int | None = None) -> dict[str, Any]:
    """``llama_model_quantize(src, dest)`` to ``kind`` (q4_k_m | q5_k_m | q6_k) with llama.cpp's default
    parameters (``llama_model_quantize_default_params``: output head and embeddings as llama.cpp chooses,
    no importance matrix). ``src`` is an f16 GGUF. Returns file, type, bytes, seconds."""
    import llama_cpp  # noqa: I001 - optional extra (compiled llama.cpp); the caller checked it is there

    if kind not in LLAMA_CPP_TYPES:
        raise EditkitError(
            f"export.gguf: {kind!r} is not a llama.cpp quantisation ({', '.join(LLAMA_CPP_TYPES)})"
        )
    _quiet()
    src, dest = Path(src), Path(dest)
    t0 = time.time()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, _FTYPES[kind])
    params.nthread = int(threads or 0)  # <= 0: every hardware thread
    with _captured_stdout() as log:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dest).encode(), ctypes.byref(params))
    if rc != 0 or not dest.exists():
        last = next((x for x in reversed(log.read().splitlines()) if x.strip()), "")
        raise EditkitError(
            f"export.gguf: llama.cpp could not quantise {src.name} to {kind} (return code {rc}): {last[:200]}"
        )
    return {
        "file": dest.name,
        "type": kind,
        "bytes": dest.stat().st_size,
        "seconds": round(time.time() - t0, 2),
        # what llama.cpp chose per tensor: rows not a multiple of 256 (the K-quant block) get a 32-block type
        "tensor_types": tensor_types(dest),
    }


def tensor_types(path: str | Path) -> dict[str, int]:
    """How many tensors of each GGML type a GGUF file holds (read from its header)."""
    import gguf

    counts: dict[str, int] = {}
    for t in gguf.GGUFReader(path).tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


class _Log:
    def __init__(self, path: Path):
        self.path = path

    def read(self) -> str:
        return self.path.read_text(encoding="utf-8", errors="replace") if self.path.exists() else ""


@contextlib.contextmanager
def _captured_stdout():
    """llama.cpp's quantiser prints a line per tensor and a warning per fallback with C's stdio, on file
    descriptors 1 and 2 below Python's sys.stdout/stderr. Both go to a temporary file for the duration (read
    back for the error message when it fails)."""

    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryDirectory(prefix="editkit-quantize-") as tmp:
        path = Path(tmp) / "log.txt"
        saved = {fd: os.dup(fd) for fd in (1, 2)}
        try:
            with open(path, "wb") as fh:
                for fd in saved:
                    os.dup2(fh.fileno(), fd)
                try:
                    yield _Log(path)
                finally:
                    _libc_flush()
                    sys.stderr.flush()
                    for fd, old in saved.items():
                        os.dup2(old, fd)
        finally:
            for old in saved.values():
                os.close(old)


def _libc_flush() -> None:
    """Flush C's stdio buffers (printf output still in them would land after the descriptor is back)."""
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):  # pragma: no cover - no C library to ask
        pass


# ------------------------------------------------------------------------------------------------------
# the round trip through llama.cpp's reader
# ------------------------------------------------------------------------------------------------------


def load(path: str | Path, n_ctx: int = 2048, threads: int | None = None, logits_all: bool = False):
    """A ``llama_cpp.Llama`` on ``path`` (CPU, quiet, deterministic); ``logits_all`` keeps every position's
    logits (:func:`prompt_logits`)."""
    import llama_cpp  # noqa: I001 - optional extra (compiled llama.cpp)

    _quiet()
    return llama_cpp.Llama(
        model_path=str(path),
        n_ctx=n_ctx,
        n_threads=threads,
        n_threads_batch=threads,
        seed=0,
        verbose=False,
        logits_all=logits_all,
    )


def prompt_logits(path: str | Path, prompts: list[list[int]], threads: int | None = None) -> list:
    """llama.cpp's logits (float32, [positions, vocab]) at every position of each token-id sequence."""
    import numpy as np

    llm = load(path, threads=threads, logits_all=True)
    out = []
    try:
        for ids in prompts:
            llm.reset()
            llm.eval(ids)
            out.append(np.array(llm.scores[: len(ids)], dtype=np.float32))
    finally:
        llm.close()
    return out


def chat_prompt(llm, messages: list[dict]) -> tuple[str, list[int]]:
    """The file's own chat template (``tokenizer.chat_template``), rendered and tokenized exactly as
    ``Llama.create_chat_completion`` does with it: (prompt text, token ids)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter  # noqa: I001 - optional extra

    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        raise EditkitError("the GGUF file has no chat template (tokenizer.chat_template)")
    eos, bos = llm.token_eos(), llm.token_bos()
    text = lambda t: llm._model.token_get_text(t) if t >= 0 else ""  # noqa: E731 - as Llama.__init__ does
    fmt = Jinja2ChatFormatter(
        template=template, eos_token=text(eos), bos_token=text(bos), stop_token_ids=[eos]
    )
    res = fmt(messages=messages)
    ids = llm.tokenize(res.prompt.encode("utf-8"), add_bos=not res.added_special, special=True)
    return res.prompt, list(ids)


def greedy(llm, ids: list[int], max_new_tokens: int) -> list[int]:
    """Greedy continuation (llama.cpp's greedy sampler, temperature 0) of ``ids``, stopped at an end-of-
    generation token (not included) or after ``max_new_tokens``."""
    import llama_cpp  # noqa: I001 - optional extra (compiled llama.cpp)

    out: list[int] = []
    for tok in llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True):
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, tok):
            break
        out.append(int(tok))
        if len(out) >= max_new_tokens:
            break
    return out


def chat_generations(
    path: str | Path, prompts: list[str], max_new_tokens: int, threads: int | None = None
) -> dict:
    """For each user prompt: the prompt llama.cpp renders from the file's template, its token ids and the
    greedy continuation's token ids and text; plus the load and generation seconds."""
    t0 = time.time()
    llm = load(path, threads=threads)
    loaded = time.time() - t0
    rows = []
    try:
        for p in prompts:
            text, ids = chat_prompt(llm, [{"role": "user", "content": p}])
            gen = greedy(llm, ids, max_new_tokens)
            rows.append(
                {
                    "prompt": text,
                    "prompt_ids": ids,
                    "ids": gen,
                    "text": llm.detokenize(gen).decode("utf-8", "replace"),
                }
            )
    finally:
        llm.close()
    return {
        "rows": rows,
        "load_seconds": round(loaded, 2),
        "generate_seconds": round(time.time() - t0 - loaded, 2),
    }


def agreement(a: list[int], b: list[int]) -> int:
    """How many leading tokens two generations share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def chat_ids(tokenizer, prompts: list[str]) -> list[list[int]]:
    """transformers' side: each user prompt through the tokenizer's chat template, as token ids."""
    out = []
    for p in prompts:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        out.append(list(tokenizer(text, add_special_tokens=False)["input_ids"]))
    return out


def logits_vs_reference(
    path: str | Path, ids: list[list[int]], reference: list, threads: int | None = None
) -> dict:
    """llama.cpp's logits on ``ids`` against ``reference`` (transformers' logits on the same ids, one
    [positions, vocab] array each): max |Δlogit|, the largest |logit|, and the share of positions whose top
    token is the same."""
    import numpy as np

    got = prompt_logits(path, ids, threads=threads)
    worst = scale = 0.0
    same = total = 0
    for g, r in zip(got, reference, strict=True):
        r = np.asarray(r, dtype=np.float32)
        worst = max(worst, float(np.abs(g - r).max()))
        scale = max(scale, float(np.abs(r).max()))
        same += int((g.argmax(-1) == r.argmax(-1)).sum())
        total += len(r)
    return {"max_abs_logit_diff": worst, "max_abs_logit": scale, "top1_agreement": same / total}
