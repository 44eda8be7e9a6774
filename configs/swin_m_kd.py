r"""The paper's headline result: Swin-T (ImageNet-1K) -> CIFAR-100 teacher -> Swin-M student.

Algorithm 1 with the full framework (Table IX, 87.14% top-1): Swin-M keeps the teacher's
first 8 blocks (cut points 8, 10), is distilled with the MSE logit loss and the weighted
harmonic joint loss (w_d = 13, w_s = 1), 60 epochs, AdamW 2e-4, 5 warm-up epochs.

    python train.py --config configs/swin_m_kd.py --workdir runs/swin_m_kd
    python train.py --config configs/swin_m_kd.py:smoke --workdir /tmp/smoke   # a few steps
"""

from configs import common


def get_config(arg=None):
    return common.full_framework_config("swin_m", arg)
