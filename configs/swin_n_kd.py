r"""The paper's Swin-N result: Swin-T (ImageNet-1K) -> CIFAR-100 teacher -> Swin-N student.

Algorithm 1 with the full framework (Table IX, 85.21% top-1): Swin-N keeps the teacher's
first 6 blocks (cut points 6, 10), is distilled with the MSE logit loss and the weighted
harmonic joint loss (w_d = 13, w_s = 1), 60 epochs, AdamW 2e-4, 5 warm-up epochs.

    python train.py --config configs/swin_n_kd.py --workdir runs/swin_n_kd
    python train.py --config configs/swin_n_kd.py:smoke --workdir /tmp/smoke   # a few steps
"""

from configs import common


def get_config(arg=None):
    return common.full_framework_config("swin_n", arg)
