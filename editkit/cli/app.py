"""The `editkit` typer app and what every command shares: the two consoles, ``fail`` (a user error as one
line and exit code 2), the run lock a command holds, and number formatting. The commands register
themselves on ``app`` from their own modules (``apply``, ``evaluate``, ``runs``); ``main`` assembles them.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from editkit.errors import scrub_secrets

app = typer.Typer(
    name="editkit",
    help=(
        "Remove a capability or behaviour from a Hugging Face causal LM and publish the result as an "
        "ordinary checkpoint.\n\nExample: editkit apply recipes/remove_moral.yaml"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _flags_without_type() -> None:
    """typer 0.29 prints ``<bool>`` after on/off flags (--push, --help) in --help; a flag takes no value."""
    from typer.core import TyperOption

    show = TyperOption.display_type_rich
    if getattr(show, "_editkit", False):
        return

    def display_type_rich(self, ctx):
        return None if getattr(self, "is_flag", False) else show(self, ctx)

    display_type_rich._editkit = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_without_type()
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


@app.callback()
def _quiet_libraries() -> None:
    """Library chatter (dataset split generation bars, load reports) would drown editkit's own output."""
    import logging
    import os

    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for name in ("datasets", "transformers", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()
        from transformers.utils import logging as tlog

        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
        from huggingface_hub.utils import logging as hlog

        hlog.set_verbosity_error()  # its HTTP retries log one warning line per attempt
    except ImportError:  # pragma: no cover
        pass


def fail(e: BaseException) -> None:
    # the message is text, not markup: "pip install 'editkit[lm-eval]'" must keep its brackets
    err.print(f"[bold red]error:[/] {escape(scrub_secrets(str(e)))}", markup=True, soft_wrap=True)
    raise typer.Exit(2)


def _holding(run_dir: Path, command: str, wait: bool):
    """The run's lock for one command (``editkit.run.events.run_lock``); waiting is announced on stderr."""
    from editkit.run.events import run_lock

    return run_lock(run_dir, command, wait=wait, on_wait=lambda m: err.print(m, markup=False))


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else ("" if v is None else str(v))
