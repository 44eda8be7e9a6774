"""Student variants of the paper's Table IX: initialisation x distillation, and one more.

A variant is written `INIT` or `INIT+kd`, INIT in {random, transfer}:
    random       trained from scratch on hard labels (Table II baseline)
    random+kd    from scratch, distilled from the teacher (Tables IV-VII)
    transfer     first blocks copied from the teacher, hard labels only (Table VIII)
    transfer+kd  the full framework (Algorithm 1, Table IX last rows)
and `random+long`, the strong scratch baseline: from scratch on hard labels for as many
optimizer steps as the teacher had (its pretraining and fine-tuning together), so that a
gain over scratch is not just the teacher's longer training showing through.
"""

from __future__ import annotations

import dataclasses

from swin_flax.errors import UserInputError

INITS = ("random", "transfer")


@dataclasses.dataclass(frozen=True)
class StudentVariant:
    init: str
    distill: bool
    long: bool = False  # random+long: the teacher's training budget, labels only

    @property
    def transfer(self) -> bool:
        return self.init == "transfer"

    @property
    def name(self) -> str:
        return self.init + ("_kd" if self.distill else "") + ("_long" if self.long else "")

    @property
    def spelling(self) -> str:
        """As written in `runs`: random, random+kd, transfer, transfer+kd, random+long."""
        return self.init + ("+kd" if self.distill else "") + ("+long" if self.long else "")


def parse_variant(text: str) -> StudentVariant:
    init, _, suffix = text.strip().partition("+")
    if (init, suffix) == ("random", "long"):
        return StudentVariant(init="random", distill=False, long=True)
    if init not in INITS or suffix not in ("", "kd"):
        raise UserInputError(
            f"unknown student variant {text!r}; expected one of random, random+kd, transfer, "
            "transfer+kd, random+long"
        )
    return StudentVariant(init=init, distill=suffix == "kd")


def parse_variants(text: str) -> list[StudentVariant]:
    """'transfer+kd,random' -> variants in order; '' -> none (teacher only)."""
    variants = [parse_variant(part) for part in text.split(",") if part.strip()]
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise UserInputError(f"student variants repeat: {text!r}")
    return variants
