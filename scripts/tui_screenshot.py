"""Render `editkit monitor` on a run directory to an SVG (the README screenshot).

python scripts/tui_screenshot.py RUN_DIR docs/tui.svg [--panel 2]
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from editkit_tui.app import MonitorApp


async def shoot(run: Path, out: Path, panel: str, size: tuple[int, int]) -> None:
    app = MonitorApp(run, follow=False)
    app.animation_level = "none"
    async with app.run_test(size=size) as pilot:
        await pilot.pause(0.5)
        await pilot.press(panel)
        await pilot.pause(0.5)
        out.write_text(app.export_screenshot(title=f"editkit monitor {run.name}"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--panel", default="3", help="panel key 1-6 (3 = metrics)")
    ap.add_argument("--width", type=int, default=130)
    ap.add_argument("--height", type=int, default=42)
    a = ap.parse_args()
    asyncio.run(shoot(a.run, a.out, a.panel, (a.width, a.height)))


if __name__ == "__main__":
    main()
