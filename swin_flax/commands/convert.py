"""Convert Swin weights between timm/PyTorch/transformers and swin_flax.

Import (timm .safetensors, .pth, an original Microsoft checkpoint, a timm model name, a
Hugging Face transformers directory or hub repo; the layout is detected from the keys):

    python convert_timm_weights.py swin_tiny_patch4_window7_224.ms_in1k ckpt/swin_t_in1k
    python convert_timm_weights.py microsoft/swin-tiny-patch4-window7-224 ckpt/swin_t_hf
    python convert_timm_weights.py swin_tiny.pth ckpt/swin_t_c100 --num-classes 100 --reinit-head
    python convert_timm_weights.py model.safetensors ckpt/swin_t_384 --window-size 12
    python convert_timm_weights.py train_ckpt.pth ckpt/swin_t_ema --use-ema

then `model, params = swin_flax.load_checkpoint("ckpt/swin_t_in1k")`. A transformers
config.json gives the image size and the class names (id2label, stored with the checkpoint).

Export (a swin_flax checkpoint to a .safetensors file timm loads with strict=True, or to a
directory that transformers' SwinForImageClassification.from_pretrained loads):

    python convert_timm_weights.py --export ckpt/swin_m_kd swin_m.safetensors
    python convert_timm_weights.py --export ckpt/swin_m_kd swin_m_hf --format transformers

Bad input ends with a message on stderr and exit code 2 (SWIN_FLAX_DEBUG=1: traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from swin_flax import cli
from swin_flax.weights.bias_table import BIAS_RESIZE_METHODS


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    parser.add_argument(
        "source",
        help="import: checkpoint file or directory, timm model name "
        "or hub repo; --export: a swin_flax checkpoint directory",
    )
    parser.add_argument(
        "out",
        help="import: output checkpoint directory; --export: output "
        ".safetensors file (--format timm) or directory (--format transformers)",
    )
    parser.add_argument(
        "--export",
        action="store_true",
        help="export a swin_flax checkpoint (to timm, or see --format)",
    )
    parser.add_argument(
        "--format",
        choices=("timm", "transformers"),
        default=None,
        help="--export only: a timm .safetensors file (the default) or a "
        "transformers directory (config.json + model.safetensors)",
    )
    parser.add_argument(
        "--use-ema",
        action="store_true",
        help="read the EMA weights ('state_dict_ema'/'model_ema') of a PyTorch "
        "training checkpoint instead of its plain state_dict",
    )
    parser.add_argument(
        "--img-size",
        type=int,
        default=None,
        help="input resolution of the converted model (default: a transformers "
        "config.json's image_size, else from the weights)",
    )
    parser.add_argument(
        "--window-size",
        type=int,
        default=None,
        help="window of the converted model; bias tables are resampled and "
        "img-size defaults to window*patch*2**(stages-1), e.g. 384 for 12",
    )
    parser.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="classes of the converted model (default: the checkpoint's head)",
    )
    head = parser.add_mutually_exclusive_group()
    head.add_argument(
        "--reinit-head",
        action="store_true",
        help="replace the checkpoint's classifier with a fresh random one",
    )
    head.add_argument(
        "--drop-head",
        action="store_true",
        help="drop the classifier (num_classes=0, pooled features out)",
    )
    parser.add_argument(
        "--bias-resize",
        choices=BIAS_RESIZE_METHODS,
        default="timm",
        help="how bias tables are resampled for another window: as timm's "
        "loader does, or bicubic as the original Swin code",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    return parser.parse_args(argv)


def run_import(args) -> None:
    from swin_flax import count_params
    from swin_flax.weights.checkpoint import load_class_names
    from swin_flax.weights.importer import convert

    head = "reinit" if args.reinit_head else "drop" if args.drop_head else "keep"
    model, params = convert(
        args.source,
        args.out,
        img_size=args.img_size,
        num_classes=args.num_classes,
        window_size=args.window_size,
        head=head,
        overwrite=args.overwrite,
        bias_resize=args.bias_resize,
        use_ema=args.use_ema,
    )
    print(f"converted {args.source}")
    print(f"  architecture: {model.config.describe()}")
    print(f"  parameters:   {count_params(params):,}")
    class_names = load_class_names(args.out)
    if class_names:
        shown = ", ".join(class_names[:3]) + (", ..." if len(class_names) > 3 else "")
        print(f"  class names:  {shown} (stored: swin_flax.weights.checkpoint.load_class_names)")
    print(f"  written to:   {Path(args.out).absolute()}")
    print(f"  load with:    model, params = swin_flax.load_checkpoint({str(args.out)!r})")


def run_export(args) -> None:
    from swin_flax import count_params
    from swin_flax.errors import ConversionError
    from swin_flax.weights.checkpoint import load_checkpoint, load_class_names
    from swin_flax.weights.timm import save_timm_safetensors, timm_model_kwargs
    from swin_flax.weights.transformers import save_transformers

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise ConversionError(f"{out} already exists; pass --overwrite to replace it")
    model, params = load_checkpoint(args.source)
    if args.format == "transformers":
        save_transformers(
            params, model, out, class_names=load_class_names(args.source), overwrite=args.overwrite
        )
    else:
        save_timm_safetensors(params, out, model=model)
    print(f"exported {args.source}")
    print(f"  architecture: {model.config.describe()}")
    print(f"  parameters:   {count_params(params):,}")
    print(f"  written to:   {out.absolute()}")
    if args.format == "transformers":
        print("  load in PyTorch:")
        print("    from transformers import SwinForImageClassification")
        print(f"    model = SwinForImageClassification.from_pretrained({str(out)!r})")
        return
    kwargs = timm_model_kwargs(model)
    print("  load in PyTorch:")
    print("    from timm.models.swin_transformer import SwinTransformer")
    print("    from safetensors.torch import load_file")
    print(f"    model = SwinTransformer(**{json.dumps(kwargs)})")
    print(f"    model.load_state_dict(load_file({str(out)!r}), strict=True)")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.export and (
        args.img_size
        or args.window_size
        or args.num_classes is not None
        or args.reinit_head
        or args.drop_head
        or args.use_ema
    ):
        return cli.report_error(
            "--export takes no model options (they are stored in the checkpoint)"
        )
    if args.format and not args.export:
        return cli.report_error("--format is for --export (an import detects the layout)")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("  note: %(message)s"))
    logging.getLogger("swin_flax").addHandler(handler)
    logging.getLogger("swin_flax").setLevel(logging.INFO)
    (run_export if args.export else run_import)(args)
    return 0


def run() -> None:
    """The `swin-flax-convert` command (and `python convert_timm_weights.py`)."""
    cli.exit_tool(cli.run(main, sys.argv[1:]))
