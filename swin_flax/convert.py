"""Swin weights between timm (PyTorch) and swin_flax, in both directions.

Import (timm / original Microsoft / Hugging Face transformers checkpoint -> Flax):

    sd = load_state_dict("model.safetensors")        # or a .pth, a directory, a hub name
    model = SwinTransformer(**infer_architecture(sd), num_classes=100)
    params = timm_to_flax(sd, model, head="reinit")   # strict: every problem in one error

or all of it: `import_weights(source, ...)` (a transformers directory's config.json
included), `convert(source, out_dir, ...)` to write an orbax checkpoint directory.

Export (Flax -> timm): `save_timm_safetensors(params, path)` then in PyTorch
`SwinTransformer(**timm_model_kwargs(model)).load_state_dict(..., strict=True)`;
to transformers: `swin_flax.hf_transformers.save_transformers`.

The mapping is one table (`KEY_TABLE`) of timm key templates, Flax path templates and
the layout change between them; both directions read it. Other layouts are renamed to
timm's first (`to_timm_layout`; transformers' table is in `swin_flax.hf_transformers`).
Derived buffers (`relative_position_index`, `attn_mask`) are never loaded: the model
recomputes them.
PyTorch is only needed to read `.pth` files; `.safetensors` files and timm hub names are
read with `safetensors.numpy`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy so safetensors can read bf16 files)
import numpy as np
from flax import traverse_util

from swin_flax.model import SwinTransformer, abstract_params
from swin_flax.errors import ConversionError, UserInputError

logger = logging.getLogger(__name__)

HEAD_MODES = ("keep", "reinit", "drop")
BIAS_RESIZE_METHODS = ("timm", "bicubic")
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # in a directory or hub repo, in order
# Training checkpoints wrap the state_dict; timm's load_checkpoint picks them in this order.
STATE_DICT_WRAPPERS = ("state_dict", "model")
EMA_WRAPPERS = ("state_dict_ema", "model_ema")
DERIVED_BUFFERS = ("relative_position_index", "attn_mask")
INSTALL_HINT = "pip install swin_flax[convert]"


# --------------------------------------------------------------------------------------
# The key table: timm key template, Flax path template, layout change.
#   "linear": torch Linear weight (out, in)        <-> Flax Dense kernel (in, out)
#   "conv":   torch Conv2d weight (O, I, H, W)     <-> Flax Conv kernel (H, W, I, O)
#   None:     same array
# {i} is a stage index, {j} a block index.

_LINEAR_PERM = (1, 0)
_CONV_PERM = (2, 3, 1, 0)  # OIHW -> HWIO
_PERMS = {None: None, "linear": _LINEAR_PERM, "conv": _CONV_PERM}


def _layer_norm_rows(timm: str, flax: str) -> list[tuple[str, str, str | None]]:
    return [(f"{timm}.weight", f"{flax}/scale", None), (f"{timm}.bias", f"{flax}/bias", None)]


def _linear_rows(timm: str, flax: str, bias: bool = True) -> list[tuple[str, str, str | None]]:
    rows = [(f"{timm}.weight", f"{flax}/kernel", "linear")]
    if bias:
        rows.append((f"{timm}.bias", f"{flax}/bias", None))
    return rows


_BLOCK_T, _BLOCK_F = "layers.{i}.blocks.{j}", "layers_{i}/blocks_{j}"
KEY_TABLE: tuple[tuple[str, str, str | None], ...] = tuple(
    [("patch_embed.proj.weight", "patch_embed/proj/kernel", "conv"),
     ("patch_embed.proj.bias", "patch_embed/proj/bias", None)]
    + _layer_norm_rows("patch_embed.norm", "patch_embed/norm")
    + _layer_norm_rows("layers.{i}.downsample.norm", "layers_{i}/downsample/norm")
    + _linear_rows("layers.{i}.downsample.reduction", "layers_{i}/downsample/reduction", bias=False)
    + _layer_norm_rows(f"{_BLOCK_T}.norm1", f"{_BLOCK_F}/norm1")
    + _linear_rows(f"{_BLOCK_T}.attn.qkv", f"{_BLOCK_F}/attn/qkv")
    + [(f"{_BLOCK_T}.attn.relative_position_bias_table",
        f"{_BLOCK_F}/attn/relative_position_bias_table", None)]
    + _linear_rows(f"{_BLOCK_T}.attn.proj", f"{_BLOCK_F}/attn/proj")
    + _layer_norm_rows(f"{_BLOCK_T}.norm2", f"{_BLOCK_F}/norm2")
    + _linear_rows(f"{_BLOCK_T}.mlp.fc1", f"{_BLOCK_F}/mlp/fc1")
    + _linear_rows(f"{_BLOCK_T}.mlp.fc2", f"{_BLOCK_F}/mlp/fc2")
    + _layer_norm_rows("norm", "norm")
    + _linear_rows("head.fc", "head")
)


def _template_regex(template: str) -> re.Pattern:
    pattern = re.escape(template)
    for field in ("i", "j"):
        pattern = pattern.replace(re.escape("{" + field + "}"), rf"(?P<{field}>\d+)")
    return re.compile(pattern + r"\Z")


_COMPILED = [(_template_regex(t), _template_regex(f), t, f, layout) for t, f, layout in KEY_TABLE]


def timm_key_to_flax_path(key: str) -> tuple[str, str | None] | None:
    """`('layers_0/blocks_1/attn/qkv/kernel', 'linear')` for a timm key, None if unknown."""
    for timm_re, _, _, flax_template, layout in _COMPILED:
        match = timm_re.match(key)
        if match:
            return flax_template.format(**match.groupdict()), layout
    return None


def flax_path_to_timm_key(path: str) -> tuple[str, str | None] | None:
    """Inverse of `timm_key_to_flax_path`."""
    for _, flax_re, timm_template, _, layout in _COMPILED:
        match = flax_re.match(path)
        if match:
            return timm_template.format(**match.groupdict()), layout
    return None


def _to_flax_layout(array: np.ndarray, layout: str | None) -> np.ndarray:
    perm = _PERMS[layout]
    return array if perm is None else np.transpose(array, perm)


def _to_timm_layout(array: np.ndarray, layout: str | None) -> np.ndarray:
    perm = _PERMS[layout]
    return array if perm is None else np.transpose(array, np.argsort(perm))


def _timm_shape(flax_shape: tuple[int, ...], layout: str | None) -> tuple[int, ...]:
    perm = _PERMS[layout]
    if perm is None or len(flax_shape) != len(perm):
        return tuple(flax_shape)
    return tuple(flax_shape[k] for k in np.argsort(perm))


# --------------------------------------------------------------------------------------
# Reading checkpoints.

def load_state_dict(source: str | os.PathLike, *, use_ema: bool = False
                    ) -> dict[str, np.ndarray]:
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
    return _read_file(locate(source)[0], use_ema=use_ema)


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
                "save_pretrained directory or a hub name")
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
            "microsoft/swin-tiny-patch4-window7-224")
    if repo_id.startswith("timm/"):  # timm repos: model.safetensors, config.json is timm's
        return _download_from_hub(repo_id, str(source), WEIGHT_FILES[0]), None
    config = _download_from_hub(repo_id, str(source), "config.json", optional=True)
    return _download_from_hub(repo_id, str(source), *WEIGHT_FILES), config


def _read_file(path: Path, *, use_ema: bool = False) -> dict[str, np.ndarray]:
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
        f"{'/'.join(TORCH_SUFFIXES)} file written by torch.save")


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, TypeError, ValueError) as e:
        raise ConversionError(
            f"{path} is not a readable .safetensors file ({e}); expected a safetensors file "
            "of Swin weights such as timm's model.safetensors (a truncated download looks "
            "like this: fetch it again)") from None
    return _check_tensors(state, path)


def _read_torch(path: Path, use_ema: bool = False) -> dict[str, np.ndarray]:
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04" and head[:1] != b"\x80":  # zip archive / legacy pickle
        raise ConversionError(
            f"{path} is not a PyTorch checkpoint (it starts with {head!r}, not a zip archive "
            "or a pickle); expected a file written by torch.save holding a state_dict or "
            "{'model': state_dict}, or a .safetensors file")
    try:
        import torch
    except ImportError:
        raise ConversionError(
            f"reading the PyTorch checkpoint {path} needs PyTorch: {INSTALL_HINT} "
            "(or convert it to .safetensors elsewhere)") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises pickle, zip, EOF and runtime errors alike
        hint = ""
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            hint = (" It holds Python objects other than tensors (e.g. a training config); "
                    "save only the state_dict: torch.save(model.state_dict(), path).")
        raise ConversionError(
            f"{path} could not be read as a PyTorch checkpoint ({type(e).__name__}: "
            f"{_first_line(e)}); expected a file written by torch.save holding a state_dict "
            f"or {{'model': state_dict}}.{hint}") from None
    if not isinstance(obj, Mapping):
        raise ConversionError(
            f"{path} holds a {type(obj).__name__}, not a state_dict; expected "
            "torch.save(model.state_dict(), path) or {'model': state_dict}")
    inner = _unwrap(obj, path, use_ema)
    state = {str(k): _as_numpy(v) for k, v in inner.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise ConversionError(
            f"{path} holds no tensors (top-level keys: {', '.join(map(str, list(obj)[:20]))}); "
            "expected a state_dict, or one under 'state_dict', 'model', 'state_dict_ema' or "
            "'model_ema'")
    return state


def _unwrap(obj: Mapping, path: Path, use_ema: bool) -> Mapping:
    """The state_dict in a training checkpoint, chosen as timm's `load_checkpoint(use_ema=)`
    does: the plain weights unless use_ema; EMA weights also when they are all there is."""
    plain = [key for key in STATE_DICT_WRAPPERS if isinstance(obj.get(key), Mapping)]
    ema = [key for key in EMA_WRAPPERS if isinstance(obj.get(key), Mapping)]
    if use_ema and not ema:
        raise ConversionError(
            f"{path} holds no EMA weights (no {' or '.join(map(repr, EMA_WRAPPERS))}; top-level "
            f"keys: {', '.join(map(str, list(obj)[:20]))}); leave out use_ema (--use-ema)")
    if use_ema or (ema and not plain):
        logger.info("reading the EMA weights %r of %s", ema[0], path)
        return obj[ema[0]]
    if plain and ema:
        logger.info("reading %r of %s; it also holds EMA weights %r: use_ema=True (CLI: "
                    "--use-ema) reads those", plain[0], path, ema[0])
    return obj[plain[0]] if plain else obj


def _as_numpy(value: Any) -> np.ndarray:
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
        source = source[len("hf-hub:"):]
        return source if _HUB_REPO.match(source) else None
    if source.startswith("timm/"):
        return source if _TIMM_NAME.match(source[len("timm/"):]) else None
    if source.lower().endswith((".safetensors",) + TORCH_SUFFIXES):
        return None  # a missing weights file, not a repo
    if _SWIN_NAME.match(source):
        return f"timm/{source}"
    return source if _HUB_REPO.match(source) else None


def _hf_hub_download():
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise ConversionError(
            f"downloading from the Hugging Face Hub needs huggingface_hub: {INSTALL_HINT}, or "
            "download the files yourself and pass their path") from None
    return hf_hub_download


def _not_in_repo(e: Exception) -> bool:
    """The repo answered and has no such file (not: offline, no such repo, no access)."""
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    return isinstance(e, EntryNotFoundError) and not isinstance(e, LocalEntryNotFoundError)


def _download_from_hub(repo_id: str, source: str, *filenames: str,
                       optional: bool = False) -> Path | None:
    """The first of `filenames` that the repo has, downloaded (cached by huggingface_hub);
    None if it has none of them and they are `optional`."""
    download = _hf_hub_download()
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
        tag_hint = (" timm repositories are named with the pretrained tag, e.g. "
                    "swin_tiny_patch4_window7_224.ms_in1k.")
    raise ConversionError(
        f"could not download {tried} for {source!r} from the Hugging Face Hub repo "
        f"{repo_id!r} ({type(error).__name__}: {_first_line(error)}).{tag_hint} Without "
        "network access, download the files on another machine and pass their path.")


# --------------------------------------------------------------------------------------
# Layout normalisation and architecture inference.

def to_timm_layout(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Normalise a state_dict to timm's current key layout (idempotent).

    - Original Microsoft checkpoints put PatchMerging at the END of stages 0..S-2
      (`layers.N.downsample`); timm puts it at the START of stages 1..S-1. Detected by
      the presence of `layers.0.downsample.*`; renamed N -> N+1, no weight reordering.
    - `head.weight`/`head.bias` (Microsoft, older timm) -> `head.fc.*`.
    - Derived buffers (`relative_position_index`, `attn_mask`) are dropped.
    - A `module.` prefix (DistributedDataParallel) is stripped.
    - Hugging Face transformers checkpoints (`swin.encoder.layers...`, both namings) are
      renamed by `swin_flax.hf_transformers.to_timm_layout`.
    Values become numpy arrays; torch tensors (e.g. `model.state_dict()`) are accepted.
    """
    from swin_flax import hf_transformers  # here: it imports this module

    keys = list(state_dict)
    strip = "module." if keys and all(k.startswith("module.") for k in keys) else ""
    if hf_transformers.is_transformers_layout(k[len(strip):] for k in keys):
        return hf_transformers.to_timm_layout(
            {k[len(strip):]: _as_numpy(v) for k, v in state_dict.items()})
    microsoft = any(k[len(strip):].startswith("layers.0.downsample.") for k in keys)
    out = {}
    for key, value in state_dict.items():
        key = key[len(strip):]
        if key.rsplit(".", 1)[-1] in DERIVED_BUFFERS:
            continue
        if microsoft:
            key = re.sub(r"^layers\.(\d+)\.downsample\.",
                         lambda m: f"layers.{int(m.group(1)) + 1}.downsample.", key)
        if key in ("head.weight", "head.bias"):
            key = "head.fc." + key.split(".")[-1]
        out[key] = _as_numpy(value)
    return out


def _window_from_table_length(length: int) -> int | None:
    side = math.isqrt(length)
    if side * side != length or side % 2 == 0:
        return None
    return (side + 1) // 2


def default_img_size(window_size: int, patch_size: int = 4, num_stages: int = 4) -> int:
    """The image size whose last stage is exactly one window: window * patch * 2**(S-1).

    This is timm's default for its released models: 224 for window 7 and 384 for window
    12 (patch 4, four stages).
    """
    return window_size * patch_size * 2 ** (num_stages - 1)


def infer_architecture(state_dict: Mapping[str, Any]) -> dict:
    """The `SwinTransformer` fields that the weights determine.

    embed_dim, patch_size, in_chans (patch embedding conv), depths (blocks per stage),
    num_heads (width of each stage's bias table), window_size (the largest table:
    (2w-1)^2 rows), mlp_ratio (fc1 width / dim), qkv_bias, num_classes (head rows, 0
    when headless). img_size is not stored in the weights: a stage whose table is smaller
    than the window is exactly one window wide, which fixes it; otherwise it is
    `default_img_size` (224 for window 7, 384 for window 12).
    """
    from swin_flax import hf_transformers

    sd = to_timm_layout(state_dict)
    conv = sd.get("patch_embed.proj.weight")
    if conv is None or conv.ndim != 4:
        sample = ", ".join(sorted(sd)[:5])
        model_type = hf_transformers.other_model_type(sd)
        if model_type:
            raise ConversionError(
                f"a transformers {model_type!r} model (first keys: {sample}), not a Swin "
                "Transformer: swin_flax reads Swin (v1) weights in the timm, Microsoft or "
                "transformers layout")
        raise ConversionError(
            "not a Swin Transformer state_dict: no 4-D 'patch_embed.proj.weight' "
            f"(first keys: {sample})")
    embed_dim, in_chans, patch_h, patch_w = (int(d) for d in conv.shape)
    if patch_h != patch_w:
        raise ConversionError(f"non-square patches {patch_h}x{patch_w} are not supported")

    block_re = re.compile(r"layers\.(\d+)\.blocks\.(\d+)\.")
    blocks: dict[int, set[int]] = {}
    for key in sd:
        match = block_re.match(key)
        if match:
            blocks.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
    if not blocks or sorted(blocks) != list(range(len(blocks))):
        raise ConversionError(
            f"not a Swin Transformer state_dict: stages found {sorted(blocks)}, expected "
            "layers.0.blocks.0 ... with consecutive stage indices")
    depths = tuple(len(blocks[i]) for i in range(len(blocks)))

    num_heads, windows = [], []
    for i in range(len(depths)):
        table = sd.get(f"layers.{i}.blocks.0.attn.relative_position_bias_table")
        window = None if table is None or table.ndim != 2 else _window_from_table_length(
            table.shape[0])
        if window is None:
            raise ConversionError(
                f"layers.{i}.blocks.0.attn.relative_position_bias_table is missing or not "
                "a ((2w-1)^2, heads) table")
        num_heads.append(int(table.shape[1]))
        windows.append(window)
    window_size = max(windows)

    img_size = default_img_size(window_size, patch_h, len(depths))
    for i, window in enumerate(windows):
        if window < window_size:  # this stage is one window: its side is `window`
            img_size = window * patch_h * 2**i
            break

    fc1 = sd.get("layers.0.blocks.0.mlp.fc1.weight")
    mlp_ratio = 4.0 if fc1 is None else fc1.shape[0] / embed_dim
    head = sd.get("head.fc.weight")
    return dict(
        img_size=img_size,
        patch_size=patch_h,
        in_chans=in_chans,
        embed_dim=embed_dim,
        depths=depths,
        num_heads=tuple(num_heads),
        window_size=window_size,
        mlp_ratio=float(mlp_ratio),
        qkv_bias="layers.0.blocks.0.attn.qkv.bias" in sd,
        num_classes=0 if head is None else int(head.shape[0]),
    )


# --------------------------------------------------------------------------------------
# Relative position bias tables for another window.

def _linear_weights(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(len(dst), len(src)) piecewise-linear interpolation matrix, constant beyond the ends."""
    eye = np.eye(len(src))
    return np.stack([np.interp(dst, src, eye[k]) for k in range(len(src))], axis=1)


def _geometric_offsets(src_side: int, dst_side: int) -> np.ndarray:
    """Source-table positions spread geometrically so its outer edge lands near the target's.

    The BEiT/timm scheme: offsets 0, ±1, ±(1+q), ±(1+q+q^2), ... with the ratio q in
    [1.01, 1.5] found by bisection so that the sum of src_side//2 terms is dst_side//2.
    """
    half = src_side // 2
    lo, hi = 1.01, 1.5
    q = (lo + hi) / 2.0
    while hi - lo > 1e-6:
        q = (lo + hi) / 2.0
        if (1.0 - q**half) / (1.0 - q) > dst_side // 2:
            hi = q
        else:
            lo = q
    steps = np.cumsum([0.0] + [q**k for k in range(half)])  # 0, 1, 1+q, ...
    return np.concatenate([-steps[:0:-1], steps])


def _cubic_weights(src_len: int, dst_len: int, a: float = -0.75) -> np.ndarray:
    """(dst_len, src_len) matrix of torch's bicubic resize (align_corners=False, edge clamp)."""
    weights = np.zeros((dst_len, src_len))
    scale = src_len / dst_len
    for i in range(dst_len):
        x = (i + 0.5) * scale - 0.5
        x0 = math.floor(x)
        t = x - x0
        # Keys' cubic convolution kernel at distances 1+t, t, 1-t, 2-t.
        taps = (
            ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
            ((a + 2) * t - (a + 3)) * t * t + 1,
            ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
            ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a,
        )
        for k, w in enumerate(taps):
            weights[i, min(max(x0 - 1 + k, 0), src_len - 1)] += w
    return weights


def resize_relative_position_bias_table(table: np.ndarray, window_size: int, *,
                                        method: str = "timm") -> np.ndarray:
    """Resample a ((2w-1)^2, heads) bias table to `window_size`, each head's grid separately.

    method="timm": what timm's Swin checkpoint loader does (`resize_rel_pos_bias_table`,
    from BEiT): source positions spread geometrically, linear interpolation.
    method="bicubic": the original Microsoft Swin fine-tuning code (and timm's
    `resize_rel_pos_bias_table_simple`): torch bicubic, align_corners=False.
    Both are numpy; no PyTorch needed.
    """
    if method not in BIAS_RESIZE_METHODS:
        raise UserInputError(f"method must be one of {BIAS_RESIZE_METHODS}, got {method!r}")
    table = np.asarray(table)
    old_window = _window_from_table_length(table.shape[0]) if table.ndim == 2 else None
    if old_window is None:
        raise UserInputError(f"expected a ((2w-1)^2, heads) table, got shape {table.shape}")
    if old_window == window_size:
        return table
    src, dst = 2 * old_window - 1, 2 * window_size - 1
    if method == "timm":
        target = np.arange(-(dst // 2), dst // 2 + 1, dtype=np.float64)
        weights = _linear_weights(_geometric_offsets(src, dst), target)
    else:
        weights = _cubic_weights(src, dst)
    grids = table.astype(np.float64).T.reshape(-1, src, src)  # (heads, dy, dx)
    resized = np.einsum("ya,hab,xb->hyx", weights, grids, weights)
    return resized.reshape(-1, dst * dst).T.astype(table.dtype)


# --------------------------------------------------------------------------------------
# timm -> Flax.

def _describe(model: SwinTransformer) -> str:
    return (f"SwinTransformer(img_size={model.img_size}, patch_size={model.patch_size}, "
            f"embed_dim={model.embed_dim}, depths={tuple(model.depths)}, "
            f"num_heads={tuple(model.num_heads)}, window_size={model.window_size}, "
            f"num_classes={model.num_classes})")


def _fresh_head(model: SwinTransformer, rng: int | jax.Array) -> dict:
    """The head of `init_params(model, rng)`; jit lets XLA skip everything else."""
    if isinstance(rng, int):
        rng = jax.random.PRNGKey(rng)
    images = jnp.zeros((1, model.img_size, model.img_size, model.in_chans), jnp.float32)
    return jax.jit(lambda r: model.init(r, images)["params"]["head"])(rng)


def timm_to_flax(state_dict: Mapping[str, Any], model: SwinTransformer, *, head: str = "keep",
                 rng: int | jax.Array = 0, bias_resize: str = "timm") -> dict:
    """Flax parameters for `model` from a timm (or Microsoft) state_dict.

    Strict: every missing key, unexpected key and shape mismatch is collected and raised
    together in one `ConversionError`. The classifier follows `head`:
      "keep"   load it; its shape must match model.num_classes;
      "reinit" ignore the checkpoint's head, use a fresh one from the model's init (rng);
      "drop"   ignore the checkpoint's head; the model must be headless (num_classes=0).
    Relative position bias tables are resampled (`bias_resize`, see
    `resize_relative_position_bias_table`) where a block's window differs from the
    checkpoint's, e.g. a window-7 checkpoint into a window-12 model.
    """
    if head not in HEAD_MODES:
        raise UserInputError(f"head must be one of {HEAD_MODES}, got {head!r}")
    if head == "drop" and model.num_classes != 0:
        raise ConversionError(
            f"head='drop' builds a headless model, but the model has num_classes="
            f"{model.num_classes}; use num_classes=0, or head='reinit' for a new head")
    if head == "reinit" and model.num_classes == 0:
        raise ConversionError("head='reinit' needs a model with num_classes > 0")

    from swin_flax import hf_transformers

    target = traverse_util.flatten_dict(abstract_params(model), sep="/")
    sd = to_timm_layout(state_dict)
    loaded: dict[str, np.ndarray] = {}
    unexpected, mismatched, resized = [], [], []
    present: set[str] = set()  # target paths the checkpoint has, whatever their shape
    for key, value in sd.items():
        mapped = timm_key_to_flax_path(key)
        if mapped is not None and mapped[0].startswith("head/") and head != "keep":
            continue  # the caller asked for a new head / no head
        if mapped is None or mapped[0] not in target:
            unexpected.append((key, tuple(value.shape)))
            continue
        path, layout = mapped
        present.add(path)
        want = tuple(target[path].shape)
        value = np.asarray(value)
        if path.endswith("relative_position_bias_table") and value.shape != want:
            window = _window_from_table_length(want[0])
            if (value.ndim == 2 and value.shape[1] == want[1]
                    and _window_from_table_length(value.shape[0]) is not None):
                value = resize_relative_position_bias_table(value, window, method=bias_resize)
                resized.append(path)
        if value.shape != _timm_shape(want, layout):
            mismatched.append((key, tuple(value.shape), _timm_shape(want, layout)))
            continue
        loaded[path] = _to_flax_layout(value, layout).astype(target[path].dtype)

    missing = [path for path in target if path not in present
               and not (head in ("reinit", "drop") and path.startswith("head/"))]
    if unexpected or missing or mismatched:
        raise ConversionError(_problem_report(model, head, missing, unexpected, mismatched,
                                              target, hf_transformers.key_namer(state_dict)))
    if resized:
        logger.info("resized %d relative position bias tables to the model's windows (%s)",
                    len(resized), bias_resize)

    params = {path: jnp.asarray(value) for path, value in loaded.items()}
    if head == "reinit":
        for name, value in _fresh_head(model, rng).items():
            params[f"head/{name}"] = value
    return traverse_util.unflatten_dict(params, sep="/")


def _problem_report(model, head, missing, unexpected, mismatched, target, name) -> str:
    """The report of `timm_to_flax`; keys are shown as `name` gives them (the checkpoint's
    own naming: a transformers checkpoint's problems in transformers names)."""
    lines = [f"the checkpoint does not fit {_describe(model)}:"]
    if missing:
        lines.append(f"  missing from the checkpoint ({len(missing)}):")
        for path in missing:
            timm_key, layout = flax_path_to_timm_key(path) or (path, None)
            want = _timm_shape(target[path].shape, layout)
            lines.append(f"    {name(timm_key)} (model expects {want})")
    if unexpected:
        lines.append(f"  unexpected in the checkpoint ({len(unexpected)}):")
        lines += [f"    {name(key)} {shape}" for key, shape in unexpected]
    if mismatched:
        lines.append(f"  shape mismatches ({len(mismatched)}):")
        lines += [f"    {name(key)}: checkpoint {have}, model expects {want}"
                  for key, have, want in mismatched]
    head_involved = any(key.startswith("head.") for key, *_ in unexpected + mismatched) or any(
        path.startswith("head/") for path in missing)
    if head_involved and head == "keep":
        lines.append(
            "  hint: the classifier head does not match; pass head='reinit' (CLI: "
            "--reinit-head) for a fresh head with num_classes outputs, or head='drop' "
            "(CLI: --drop-head) with num_classes=0 for a headless model")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Flax -> timm.

def flax_to_timm(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """timm state_dict (float32, contiguous numpy) of Flax Swin parameters."""
    if set(params) == {"params"}:
        params = params["params"]
    out, unknown = {}, []
    for path, value in traverse_util.flatten_dict(dict(params), sep="/").items():
        mapped = flax_path_to_timm_key(path)
        if mapped is None:
            unknown.append(path)
            continue
        key, layout = mapped
        array = _to_timm_layout(np.asarray(jax.device_get(value), np.float32), layout)
        out[key] = np.ascontiguousarray(array)
    if unknown:
        raise ConversionError(
            "parameters with no timm equivalent (not a swin_flax SwinTransformer tree?): "
            + ", ".join(unknown))
    return out


def timm_model_kwargs(model: SwinTransformer) -> dict:
    """kwargs for timm's `SwinTransformer(**kwargs)` with the architecture of `model`."""
    return dict(
        img_size=model.img_size,
        patch_size=model.patch_size,
        in_chans=model.in_chans,
        num_classes=model.num_classes,
        embed_dim=model.embed_dim,
        depths=tuple(model.depths),
        num_heads=tuple(model.num_heads),
        window_size=model.window_size,
        mlp_ratio=model.mlp_ratio,
        qkv_bias=model.qkv_bias,
        drop_rate=model.drop_rate,
        proj_drop_rate=model.drop_rate,  # swin_flax's drop_rate also drops after proj/fc2
        attn_drop_rate=model.attn_drop_rate,
        drop_path_rate=model.drop_path_rate,
    )


def save_timm_safetensors(params: Mapping[str, Any], path: str | os.PathLike, *,
                          model: SwinTransformer | None = None) -> Path:
    """Write `flax_to_timm(params)` as a .safetensors file timm can load (strict=True).

    With `model`, the timm kwargs are stored in the file's metadata
    ('swin_flax.timm_kwargs', JSON).
    """
    from safetensors.numpy import save_file

    path = Path(path)
    metadata = {"format": "pt"}
    if model is not None:
        metadata["swin_flax.timm_kwargs"] = json.dumps(timm_model_kwargs(model))
    save_file(flax_to_timm(params), str(path), metadata=metadata)
    return path


# --------------------------------------------------------------------------------------
# The whole import path.

class Imported(NamedTuple):
    model: SwinTransformer
    params: dict
    class_names: list[str] | None  # a transformers config.json's id2label, if it names them


def import_weights(source: str | os.PathLike, *, img_size: int | None = None,
                   num_classes: int | None = None, window_size: int | None = None,
                   head: str = "keep", bias_resize: str = "timm", rng: int = 0,
                   use_ema: bool = False) -> Imported:
    """Read `source` (see `load_state_dict`), build the matching model and convert.

    The architecture comes from the weights (`infer_architecture`) and, for a transformers
    directory or hub repo, its config.json (which must agree with them); `img_size` and
    `window_size` may be changed (bias tables are resampled), `num_classes` only together
    with head='reinit' (or num_classes=0 with head='drop').
    """
    from swin_flax import hf_transformers

    if head not in HEAD_MODES:
        raise UserInputError(f"head must be one of {HEAD_MODES}, got {head!r}")
    weights, config_path = locate(source)
    config = None if config_path is None else hf_transformers.read_config(config_path, source)
    raw = _read_file(weights, use_ema=use_ema)
    arch = infer_architecture(raw)
    class_names = None
    if config is not None:
        arch, class_names = hf_transformers.architecture_from_config(config, arch, source)
    ckpt_classes = arch["num_classes"]
    if head == "drop":
        if num_classes not in (None, 0):
            raise ConversionError(
                f"--drop-head/head='drop' makes a headless model; num_classes={num_classes} "
                "contradicts it (use head='reinit' for a new head)")
        num_classes = 0
    elif num_classes is None:
        num_classes = ckpt_classes
    if head == "keep" and num_classes != ckpt_classes:
        have = f"a {ckpt_classes}-class head" if ckpt_classes else "no classifier head"
        raise ConversionError(
            f"{source} has {have} but num_classes={num_classes} was asked for; pass "
            "head='reinit' (CLI: --reinit-head) to replace it with a fresh "
            f"{num_classes}-class head" + (
                "" if num_classes else ", or head='drop' (CLI: --drop-head) to drop it"))
    if head == "reinit" and num_classes == 0:
        raise ConversionError("head='reinit' needs num_classes > 0 (the checkpoint is "
                              "headless: pass num_classes)")
    arch.update(num_classes=num_classes)
    if window_size is not None:
        arch["window_size"] = window_size
        if img_size is None:
            arch["img_size"] = default_img_size(window_size, arch["patch_size"],
                                                len(arch["depths"]))
    if img_size is not None:
        arch["img_size"] = img_size
    try:
        model = SwinTransformer(**arch)
    except ValueError as e:
        raise ConversionError(f"cannot build a Swin model for {source}: {e}") from None
    params = timm_to_flax(raw, model, head=head, rng=rng, bias_resize=bias_resize)
    return Imported(model, params, class_names if head == "keep" else None)


def convert(source: str | os.PathLike, out_dir: str | os.PathLike, *,
            img_size: int | None = None, num_classes: int | None = None,
            window_size: int | None = None, head: str = "keep", overwrite: bool = False,
            bias_resize: str = "timm", rng: int = 0, use_ema: bool = False
            ) -> tuple[SwinTransformer, dict]:
    """`import_weights(source, ...)`, written as an orbax checkpoint to `out_dir`.

    `load_checkpoint(out_dir)` gives the model and parameters back,
    `checkpoint_io.load_class_names(out_dir)` the class names of a transformers config.json.
    """
    from swin_flax import checkpoint_io

    checkpoint_io.check_writable(out_dir, overwrite=overwrite)  # fail before the slow part
    model, params, class_names = import_weights(
        source, img_size=img_size, num_classes=num_classes, window_size=window_size, head=head,
        bias_resize=bias_resize, rng=rng, use_ema=use_ema)
    checkpoint_io.save_checkpoint(out_dir, model, params, overwrite=overwrite,
                                  class_names=class_names)
    return model, params


__all__ = [
    "ConversionError", "KEY_TABLE", "load_state_dict", "locate", "to_timm_layout",
    "infer_architecture", "default_img_size", "resize_relative_position_bias_table",
    "timm_to_flax", "flax_to_timm", "timm_model_kwargs", "save_timm_safetensors", "Imported",
    "import_weights", "convert",
]

