"""Student variants of the paper's Table IX: initialisation x distillation.

A variant is written `INIT` or `INIT+kd`, INIT in {random, transfer}:
    random       trained from scratch on hard labels (Table II baseline)
    random+kd    from scratch, distilled from the teacher (Tables IV-VII)
    transfer     first blocks copied from the teacher, hard labels only (Table VIII)
    transfer+kd  the full framework (Algorithm 1, Table IX last rows)
"""

from __future__ import annotations

import dataclasses

from swin_flax.errors import UserInputError

INITS = ("random", "transfer")


@dataclasses.dataclass(frozen=True)
class StudentVariant:
    init: str
    distill: bool

    @property
    def transfer(self) -> bool:
        return self.init == "transfer"

    @property
    def name(self) -> str:
        return self.init + ("_kd" if self.distill else "")


def parse_variant(text: str) -> StudentVariant:
    init, _, suffix = text.strip().partition("+")
    if init not in INITS or suffix not in ("", "kd"):
        raise UserInputError(
            f"unknown student variant {text!r}; expected one of random, random+kd, transfer, "
            "transfer+kd"
        )
    return StudentVariant(init=init, distill=suffix == "kd")


def parse_variants(text: str) -> list[StudentVariant]:
    """'transfer+kd,random' -> variants in order; '' -> none (teacher only)."""
    variants = [parse_variant(part) for part in text.split(",") if part.strip()]
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise UserInputError(f"student variants repeat: {text!r}")
    return variants
