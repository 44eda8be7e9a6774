"""Reading Swin weights as numpy state_dicts: files, directories and Hugging Face Hub repos.

`load_state_dict(source)` is the whole of it; `locate(source)` finds (and downloads) the
weights file and a transformers config.json, `read_file(path)` reads one file:
  - `.safetensors` (read with `safetensors.numpy`, no PyTorch);
  - `.pth`/`.pt`/`.bin`/`.ckpt` written by `torch.save` (needs PyTorch), training
    checkpoints unwrapped (`state_dict`/`model`, EMA weights `state_dict_ema`/`model_ema`);
  - a directory with `model.safetensors` or `pytorch_model.bin` (transformers'
    `save_pretrained`);
  - a timm name with its pretrained tag or a hub repo, downloaded by huggingface_hub.
Keys are left as the file has them: `swin_flax.weights.timm` maps them.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy so safetensors can read bf16 files)
import numpy as np

from swin_flax._optional import require
from swin_flax.errors import ConversionError

logger = logging.getLogger(__name__)

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # in a directory or hub repo, in order
# Training checkpoints wrap the state_dict; timm's load_checkpoint picks them in this order.
STATE_DICT_WRAPPERS = ("state_dict", "model")
EMA_WRAPPERS = ("state_dict_ema", "model_ema")


def load_state_dict(source: str | os.PathLike, *, use_ema: bool = False) -> dict[str, np.ndarray]:
    """The weights of `source` as numpy arrays, keys as in the file.

    `source` is a `.safetensors` file (read without PyTorch), a `.pth`/`.pt`/`.bin` file
    written by `torch.save` (needs PyTorch; `{'state_dict': sd}` and `{'model': sd}` are
    unwrapped, EMA weights `{'state_dict_ema': sd}`/`{'model_ema': sd}` with use_ema=True
    or when they are the only ones), a directory holding `model.safetensors` or
    `pytorch_model.bin` (a transformers `save_pretrained` directory), a timm model name with
    its pretrained tag (`swin_tiny_patch4_window7_224.ms_in1k`, also `timm/...`) or a
    Hugging Face Hub repo (`microsoft/swin-tiny-patch4-window7-224`, also
    `hf-hub:owner/repo`), downloaded.
    """
    return read_file(locate(source)[0], use_ema=use_ema)


def locate(source: str | os.PathLike) -> tuple[Path, Path | None]:
    """(weights file, config.json or None) of `source` (see `load_state_dict`), downloading
    hub repos. A config.json comes only with a directory or a non-timm hub repo."""
    path = Path(os.fspath(source)).expanduser()
    if path.is_dir():
        weights = [path / name for name in WEIGHT_FILES if (path / name).is_file()]
        if not weights:
            raise ConversionError(
                f"{path} is a directory without {' or '.join(WEIGHT_FILES)}; pass a "
                "checkpoint file (.safetensors, .pth, .pt, .bin), a transformers "
                "save_pretrained directory or a hub name"
            )
        config = path / "config.json"
        return weights[0], config if config.is_file() else None
    if path.is_file():
        return path, None
    repo_id = _hub_repo_id(str(source))
    if repo_id is None:
        raise ConversionError(
            f"{source}: no such file or directory, and not a hub name. Pass a checkpoint file "
            "(.safetensors, .pth, .pt, .bin), a directory, a timm name with its pretrained tag "
            "such as swin_tiny_patch4_window7_224.ms_in1k or a Hugging Face Hub repo such as "
            "microsoft/swin-tiny-patch4-window7-224"
        )
    if repo_id.startswith("timm/"):  # timm repos: model.safetensors, config.json is timm's
        return _download_from_hub(repo_id, str(source), WEIGHT_FILES[0]), None
    config = _download_from_hub(repo_id, str(source), "config.json", optional=True)
    return _download_from_hub(repo_id, str(source), *WEIGHT_FILES), config


def read_file(path: Path, *, use_ema: bool = False) -> dict[str, np.ndarray]:
    """The state_dict in one weights file (see `load_state_dict`)."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _read_safetensors(path)
    if suffix in TORCH_SUFFIXES:
        return _read_torch(path, use_ema)
    # Unknown suffix: decide by content.
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":  # torch zip archive / legacy pickle
        return _read_torch(path, use_ema)
    if len(head) == 9 and head[8:9] == b"{":  # safetensors: u64 header length, then JSON
        return _read_safetensors(path)
    raise ConversionError(
        f"{path} is not a checkpoint: expected a .safetensors file or a PyTorch "
        f"{'/'.join(TORCH_SUFFIXES)} file written by torch.save"
    )


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, TypeError, ValueError) as e:
        raise ConversionError(
            f"{path} is not a readable .safetensors file ({e}); expected a safetensors file "
            "of Swin weights such as timm's model.safetensors (a truncated download looks "
            "like this: fetch it again)"
        ) from None
    return _check_tensors(state, path)


def _read_torch(path: Path, use_ema: bool = False) -> dict[str, np.ndarray]:
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04" and head[:1] != b"\x80":  # zip archive / legacy pickle
        raise ConversionError(
            f"{path} is not a PyTorch checkpoint (it starts with {head!r}, not a zip archive "
            "or a pickle); expected a file written by torch.save holding a state_dict or "
            "{'model': state_dict}, or a .safetensors file"
        )
    torch = require(
        "torch",
        f"reading the PyTorch checkpoint {path}",
        "convert",
        error=ConversionError,
        alternative="convert it to .safetensors elsewhere",
    )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises pickle, zip, EOF and runtime errors alike
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            # torch's whole hint, on one line: its options come with the caveat that they
            # are for files from a trusted source, which a first line alone would drop.
            raise ConversionError(
                f"{path} holds Python objects other than tensors (e.g. a training config), "
                "which swin_flax never unpickles; save only the state_dict: "
                "torch.save(model.state_dict(), path). torch.load(weights_only=True) said: "
                f"{_one_line(e)}"
            ) from None
        raise ConversionError(
            f"{path} could not be read as a PyTorch checkpoint ({type(e).__name__}: "
            f"{_first_line(e)}); expected a file written by torch.save holding a state_dict "
            "or {'model': state_dict}."
        ) from None
    if not isinstance(obj, Mapping):
        raise ConversionError(
            f"{path} holds a {type(obj).__name__}, not a state_dict; expected "
            "torch.save(model.state_dict(), path) or {'model': state_dict}"
        )
    inner = _unwrap(obj, path, use_ema)
    state = {str(k): as_numpy(v) for k, v in inner.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise ConversionError(
            f"{path} holds no tensors (top-level keys: {', '.join(map(str, list(obj)[:20]))}); "
            "expected a state_dict, or one under 'state_dict', 'model', 'state_dict_ema' or "
            "'model_ema'"
        )
    return state


def _unwrap(obj: Mapping, path: Path, use_ema: bool) -> Mapping:
    """The state_dict in a training checkpoint, chosen as timm's `load_checkpoint(use_ema=)`
    does: the plain weights unless use_ema; EMA weights also when they are all there is."""
    plain = [key for key in STATE_DICT_WRAPPERS if isinstance(obj.get(key), Mapping)]
    ema = [key for key in EMA_WRAPPERS if isinstance(obj.get(key), Mapping)]
    if use_ema and not ema:
        raise ConversionError(
            f"{path} holds no EMA weights (no {' or '.join(map(repr, EMA_WRAPPERS))}; top-level "
            f"keys: {', '.join(map(str, list(obj)[:20]))}); leave out use_ema (--use-ema)"
        )
    if use_ema or (ema and not plain):
        logger.info("reading the EMA weights %r of %s", ema[0], path)
        return obj[ema[0]]
    if plain and ema:
        logger.info(
            "reading %r of %s; it also holds EMA weights %r: use_ema=True (CLI: "
            "--use-ema) reads those",
            plain[0],
            path,
            ema[0],
        )
    return obj[plain[0]] if plain else obj


def as_numpy(value: Any) -> np.ndarray:
    """numpy view of an array or a torch tensor (checked without importing torch)."""
    if hasattr(value, "detach") and hasattr(value, "is_floating_point"):
        value = value.detach().cpu()
        if value.is_floating_point() and value.dtype.itemsize < 4:
            value = value.float()  # bf16/fp16 -> float32: numpy cannot hold torch's bf16
        return value.numpy()
    return np.asarray(value)


def _check_tensors(state: Mapping[str, np.ndarray], path: Path) -> dict[str, np.ndarray]:
    if not state:
        raise ConversionError(f"{path} holds no tensors; expected the weights of a Swin model")
    return dict(state)


def _one_line(e: BaseException) -> str:
    """An exception's whole message as one line: terminal escapes (torch's bold) removed,
    line breaks and tabs folded into single spaces."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    return " ".join(text.split())


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else ""


# A timm Swin name, optionally with its pretrained tag: swin_tiny_patch4_window7_224.ms_in1k.
# Other hub repositories are 'timm/...', 'owner/repo' (not a local path) or 'hf-hub:owner/repo'.
_SWIN_NAME = re.compile(r"swin[A-Za-z0-9_]*(\.[A-Za-z0-9_]+)?\Z")
_TIMM_NAME = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)?\Z")
_HUB_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


def _hub_repo_id(source: str) -> str | None:
    if source.startswith("hf-hub:"):
        source = source[len("hf-hub:") :]
        return source if _HUB_REPO.match(source) else None
    if source.startswith("timm/"):
        return source if _TIMM_NAME.match(source[len("timm/") :]) else None
    if source.lower().endswith((".safetensors",) + TORCH_SUFFIXES):
        return None  # a missing weights file, not a repo
    if _SWIN_NAME.match(source):
        return f"timm/{source}"
    return source if _HUB_REPO.match(source) else None


def _not_in_repo(e: Exception) -> bool:
    """The repo answered and has no such file (not: offline, no such repo, no access)."""
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    return isinstance(e, EntryNotFoundError) and not isinstance(e, LocalEntryNotFoundError)


def _download_from_hub(
    repo_id: str, source: str, *filenames: str, optional: bool = False
) -> Path | None:
    """The first of `filenames` that the repo has, downloaded (cached by huggingface_hub);
    None if it has none of them and they are `optional`."""
    download = require(
        "huggingface_hub",
        "downloading from the Hugging Face Hub",
        "convert",
        error=ConversionError,
        alternative="download the files yourself and pass their path",
    ).hf_hub_download
    for filename in filenames:
        try:
            return Path(download(repo_id=repo_id, filename=filename))
        except Exception as e:  # network, authentication, missing repo or file: all end here
            error = e
            if not _not_in_repo(e):
                break
    else:
        if optional:
            return None
    tried = " or ".join(filenames[: filenames.index(filename) + 1])
    tag_hint = ""
    if repo_id.startswith("timm/") and "." not in repo_id.split("/")[-1]:
        tag_hint = (
            " timm repositories are named with the pretrained tag, e.g. "
            "swin_tiny_patch4_window7_224.ms_in1k."
        )
    raise ConversionError(
        f"could not download {tried} for {source!r} from the Hugging Face Hub repo "
        f"{repo_id!r} ({type(error).__name__}: {_first_line(error)}).{tag_hint} Without "
        "network access, download the files on another machine and pass their path."
    )


__all__ = [
    "load_state_dict",
    "locate",
    "read_file",
    "as_numpy",
    "TORCH_SUFFIXES",
    "WEIGHT_FILES",
    "STATE_DICT_WRAPPERS",
    "EMA_WRAPPERS",
]
