"""Parity of swin_flax with timm and with transformers, configuration by configuration.

    python tests/weights/parity_report.py

prints, for each configuration, the largest |difference| between timm (PyTorch, CPU,
float32) and swin_flax (JAX, CPU, float32, matmul precision 'highest') in the logits
and in every stage's features (the worst stage); then, for transformers'
SwinForImageClassification, the largest |logit difference| after importing its weights
(hub-file naming from save_pretrained with config.json; transformers 5 naming from
state_dict() as a bare file) and after exporting swin_flax weights back to it. Weights
are random and perturbed away from the init (LayerNorm scales not 1, biases not 0, bias
tables large) so that no mix-up of weights can hide. tests/weights/test_timm.py
and tests/weights/test_transformers.py assert the same numbers; this script only reports them.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

if __name__ == "__main__":  # run as a script: make the repo importable, CPU only
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import numpy as np

BATCH = 2
_SMALL = dict(embed_dim=96, num_heads=(3, 6, 12, 24), window_size=7, img_size=224)

# name -> timm SwinTransformer kwargs.
CONFIGS: dict[str, dict] = {
    "swin_t_224": dict(_SMALL, depths=(2, 2, 6, 2), num_classes=100),
    "swin_m_224": dict(_SMALL, depths=(2, 2, 4, 2), num_classes=100),
    "swin_n_224": dict(_SMALL, depths=(2, 2, 2, 2), num_classes=100),
    "w12_384": dict(_SMALL, depths=(2, 2, 2, 2), window_size=12, img_size=384, num_classes=10),
    # 16/8/4/2 tokens per side with window 4: stage 2 is exactly one window, stage 3
    # (2x2) is smaller than the window (effective window 2, 3x3 bias table).
    "pico_32": dict(
        img_size=32,
        patch_size=2,
        embed_dim=32,
        depths=(2, 2, 2, 2),
        num_heads=(1, 2, 4, 8),
        window_size=4,
        num_classes=10,
    ),
}
MICROSOFT = "swin_t_224 (Microsoft .pth)"  # swin_t_224's weights, original key layout
MAGNITUDES: dict[str, dict[str, float]] = {}  # name -> {feature: max |timm value|}

# name -> transformers SwinConfig kwargs (patch 4). Narrow, so that the tests stay fast;
# odd depths, three stages, the paper's Swin-M (2,2,4,2) and Swin-N (2,2,2,2), window 12.
HF_CONFIGS: dict[str, dict] = {
    "odd_2232_128_w4": dict(
        image_size=128,
        embed_dim=24,
        depths=(2, 2, 3, 2),
        num_heads=(1, 2, 3, 4),
        window_size=4,
        num_labels=5,
    ),
    "3stage_112_w7": dict(
        image_size=112,
        embed_dim=32,
        depths=(2, 3, 2),
        num_heads=(2, 4, 8),
        window_size=7,
        num_labels=7,
    ),
    "swin_m_224": dict(
        image_size=224,
        embed_dim=32,
        depths=(2, 2, 4, 2),
        num_heads=(1, 2, 4, 8),
        window_size=7,
        num_labels=10,
    ),
    "swin_n_224": dict(
        image_size=224,
        embed_dim=32,
        depths=(2, 2, 2, 2),
        num_heads=(1, 2, 4, 8),
        window_size=7,
        num_labels=10,
    ),
    "w12_384": dict(
        image_size=384,
        embed_dim=24,
        depths=(2, 2, 2, 2),
        num_heads=(1, 2, 4, 8),
        window_size=12,
        num_labels=10,
    ),
}
HF_NAMINGS = ("hub", "v5")  # hub files (save_pretrained) / transformers 5 module names


def _perturb(model):
    """Move every parameter of a torch Swin (timm's or transformers') away from its init."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                p.add_(0.3 * torch.randn_like(p))
            elif p.ndim == 1 and "norm" in name and name.endswith("weight"):
                p.uniform_(0.5, 1.5)  # LayerNorm scale
            elif p.ndim == 1:
                p.add_(0.05 * torch.randn_like(p))  # biases
            else:
                p.add_(0.03 * torch.randn_like(p))
    return model.eval()


def make_timm_model(kwargs: dict, seed: int = 0):
    """timm SwinTransformer with every parameter moved away from timm's init."""
    import torch
    from timm.models.swin_transformer import SwinTransformer

    torch.manual_seed(seed)
    return _perturb(SwinTransformer(drop_path_rate=0.0, **kwargs))


def make_hf_model(kwargs: dict, seed: int = 0):
    """transformers SwinForImageClassification, every parameter moved away from its init."""
    import torch
    from transformers import SwinConfig, SwinForImageClassification

    torch.manual_seed(seed)
    config = SwinConfig(patch_size=4, drop_path_rate=0.0, **kwargs)
    return _perturb(SwinForImageClassification(config))


def write_hf_checkpoint(model, directory: Path, naming: str) -> Path:
    """What convert_timm_weights.py is given: 'hub', a save_pretrained directory (config.json,
    model.safetensors in the hub-file naming); 'v5', state_dict() as a bare .safetensors file
    (transformers 5 naming, no config: the architecture is inferred)."""
    if naming == "hub":
        model.save_pretrained(directory)
        return directory
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), str(directory / "v5.safetensors"))
    return directory / "v5.safetensors"


def hf_logits(model, images_nhwc: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(images_nhwc).permute(0, 3, 1, 2)).logits.numpy()


def perturbed_params(params, seed: int = 1):
    """Flax-side weights of their own (as after fine-tuning), for export tests."""
    rs = np.random.RandomState(seed)
    return jax.tree_util.tree_map(
        lambda x: np.asarray(x) + rs.normal(0, 0.05, x.shape).astype(np.float32), params
    )


def hf_export_diff(model, params, directory: Path, images: np.ndarray) -> float:
    """max |logit diff| of swin_flax and transformers after `save_transformers`; the load
    must be strict (no missing, unexpected or misshapen keys)."""
    from transformers import SwinForImageClassification

    from swin_flax.weights.transformers import save_transformers

    save_transformers(params, model, directory)
    loaded, info = SwinForImageClassification.from_pretrained(directory, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v}
    assert not problems, problems
    ours = flax_forward(model, params, images)[0]
    return float(np.abs(ours - hf_logits(loaded.eval(), images)).max())


def measure_hf(name: str, directory: Path) -> dict[str, float]:
    """{'import hub', 'import v5', 'export': max |logit diff|} for one configuration."""
    from swin_flax.weights.importer import import_weights

    hf_model = make_hf_model(HF_CONFIGS[name])
    images = random_images(dict(img_size=HF_CONFIGS[name]["image_size"]))
    ref = hf_logits(hf_model, images)
    diffs = {}
    for naming in HF_NAMINGS:
        model, params, _ = import_weights(write_hf_checkpoint(hf_model, directory / naming, naming))
        diffs[f"import {naming}"] = float(
            np.abs(flax_forward(model, params, images)[0] - ref).max()
        )
    diffs["export"] = hf_export_diff(model, perturbed_params(params), directory / "export", images)
    return diffs


def timm_state_dict(model) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def to_microsoft_layout(state_dict: dict) -> dict:
    """timm keys -> the original Swin repository's (inverse of `to_timm_layout`)."""
    import re

    out = {}
    for key, value in state_dict.items():
        key = re.sub(
            r"^layers\.(\d+)\.downsample\.",
            lambda m: f"layers.{int(m.group(1)) - 1}.downsample.",
            key,
        )
        out[key.replace("head.fc.", "head.")] = value
    return out


def random_images(kwargs: dict, seed: int = 0) -> np.ndarray:
    size, chans = kwargs["img_size"], kwargs.get("in_chans", 3)
    return np.random.RandomState(seed).randn(BATCH, size, size, chans).astype(np.float32)


def timm_forward(model, images_nhwc: np.ndarray):
    """timm logits and each stage's NHWC output, run stage by stage."""
    import torch

    features = {}
    with torch.no_grad():
        x = model.patch_embed(torch.from_numpy(images_nhwc).permute(0, 3, 1, 2))
        for i, layer in enumerate(model.layers):
            x = layer(x)
            features[f"stage_{i}"] = x.numpy()
        x = model.norm(x)
        features["norm"] = x.numpy()
        logits = model.forward_head(x).numpy()
    return logits, features


def flax_forward(model, params, images_nhwc: np.ndarray):
    logits, features = _apply(model, params, images_nhwc)
    return np.asarray(logits), {k: np.asarray(v) for k, v in features.items()}


def _apply_impl(model, params, images):
    return model.apply({"params": params}, images, return_features=True)


_apply = jax.jit(_apply_impl, static_argnums=0)


def max_diffs(ours, ref) -> tuple[float, dict[str, float]]:
    (logits, feats), (ref_logits, ref_feats) = ours, ref
    assert logits.shape == ref_logits.shape, (logits.shape, ref_logits.shape)
    assert set(feats) == set(ref_feats), (sorted(feats), sorted(ref_feats))
    feature_diffs = {}
    for k in ref_feats:
        assert feats[k].shape == ref_feats[k].shape, (k, feats[k].shape, ref_feats[k].shape)
        feature_diffs[k] = float(np.abs(feats[k] - ref_feats[k]).max())
    return float(np.abs(logits - ref_logits).max()), feature_diffs


def measure(name: str, timm_model=None) -> tuple[float, dict[str, float]]:
    """(max |logit diff|, {feature: max |diff|}) for one configuration."""
    from swin_flax import SwinConfig, SwinTransformer
    from swin_flax.weights.layouts import infer_architecture
    from swin_flax.weights.sources import load_state_dict
    from swin_flax.weights.timm import timm_to_flax

    kwargs = CONFIGS["swin_t_224" if name == MICROSOFT else name]
    timm_model = make_timm_model(kwargs) if timm_model is None else timm_model
    state = timm_state_dict(timm_model)
    if name == MICROSOFT:
        import torch

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "swin_tiny_patch4_window7_224.pth"
            torch.save(
                {"model": {k: torch.from_numpy(v) for k, v in to_microsoft_layout(state).items()}},
                path,
            )
            state = load_state_dict(path)
    model = SwinTransformer(SwinConfig(**infer_architecture(state)))
    params = timm_to_flax(state, model)
    images = random_images(kwargs)
    reference = timm_forward(timm_model, images)
    MAGNITUDES[name] = {k: float(np.abs(v).max()) for k, v in reference[1].items()}
    return max_diffs(flax_forward(model, params, images), reference)


def main() -> None:
    rows = []
    for name in list(CONFIGS) + [MICROSOFT]:
        logit_diff, feature_diffs = measure(name)
        worst = max(feature_diffs, key=feature_diffs.get)
        rows.append((name, logit_diff, feature_diffs[worst], worst, MAGNITUDES[name][worst]))
    print(f"timm vs swin_flax, CPU float32, batch {BATCH}, perturbed random weights")
    print(
        f"{'configuration':<30} {'max |logit diff|':>17} {'max |feature diff|':>19}  "
        "(where; max |feature| there)"
    )
    for name, logit_diff, feature_diff, worst, size in rows:
        print(f"{name:<30} {logit_diff:>17.2e} {feature_diff:>19.2e}  ({worst}; {size:.1f})")

    print("\ntransformers SwinForImageClassification vs swin_flax: max |logit diff|")
    print(f"{'configuration':<30} {'import hub files':>17} {'import v5 names':>16} {'export':>10}")
    for name in HF_CONFIGS:
        with tempfile.TemporaryDirectory() as tmp:
            diffs = measure_hf(name, Path(tmp))
        print(
            f"{name:<30} {diffs['import hub']:>17.2e} {diffs['import v5']:>16.2e} "
            f"{diffs['export']:>10.2e}"
        )


if __name__ == "__main__":
    # The tests set the same precision per test (tests/weights/conftest.py), not globally.
    jax.config.update("jax_default_matmul_precision", "highest")
    main()
