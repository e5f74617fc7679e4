"""The card's part of an `erase` run: where the class directions were estimated and what they removed."""

from __future__ import annotations

from editkit.methods.report import Info, Report, cell, num


class EraseInfo(Info):
    estimate_layers: list[int] = []
    n_directions: int | None = None
    rank: int | None = None
    rounds: int | None = None
    edited_layers: list[int] | str | None = None
    writers: list[str] = []
    n_items: int | None = None
    frames: list[str] = []
    classes: int | None = None
    between_class_share_before: dict[str, float] = {}
    between_class_share_after: dict[str, float] = {}


class EraseReport(Report):
    info_model = EraseInfo
    info: EraseInfo

    def shown(self) -> set[str]:
        return {
            "estimate_layers",
            "n_directions",
            "rank",
            "rounds",
            "edited_layers",
            "writers",
            "n_items",
            "frames",
            "classes",
            "between_class_share_before",
            "between_class_share_after",
            "directions",
        }

    def where(self) -> list[str]:
        i = self.info
        if not i.estimate_layers:
            return []
        edited = "every layer" if i.edited_layers == "all" else f"layers {cell(i.edited_layers)}"
        lines = [
            f"The capability's answer classes ({num(i.classes)} classes, {num(i.n_items)} train items in the "
            f"frames {cell(i.frames)}) were compared in the residual stream entering layer(s) "
            f"{cell(i.estimate_layers)}: the top {num(i.rank)} direction(s) of the between-class scatter per layer "
            f"and round ({num(i.rounds)} round(s)), {num(i.n_directions)} orthonormal directions in all, were "
            f"projected out of the {', '.join(i.writers)} writers of {edited}.",
            "",
            "| layer | between-class share of the train activations, base | after the edit |",
            "| --- | --- | --- |",
        ]
        for li in i.estimate_layers:
            key = str(li)
            lines.append(
                f"| {li} | {num(i.between_class_share_before.get(key))} | {num(i.between_class_share_after.get(key))} |"
            )
        return lines + [""]
