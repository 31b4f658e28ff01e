"""The fast versions of bench/reproductions/eigensam_alignment.py and ssam_lr.py: one seed of the MLP on digits,
with thresholds set from the full runs' spread over three seeds (bench/results/reproductions/*.json), not from
this seed. Neither paper's claim is reproduced in full at this scale; where it is not, the tests hold what every
full-run seed showed instead (see the comments)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench" / "reproductions"))
import eigensam_alignment  # noqa: E402
import ssam_lr  # noqa: E402

#: Full run, MLP and CNN, 3 seeds each: Eigen-SAM's mean alignment over training minus SAM's (same seed) was
#: +0.030 to +0.043 on the MLP and +0.019 to +0.034 on the CNN: positive in all six pairs, but small (Welch t
#: 0.5 on the MLP, where the seeds' own spread is 0.1; 2.0 on the CNN). One MLP seed must show at least +0.015.
#: An Eigen-SAM without its eigenvector term is SAM exactly, and the difference 0.
ALIGNMENT_GAIN = 0.015
#: Full run, MLP: Eigen-SAM's final top eigenvalue was within 0.7% of SAM's in every seed (0.077 both): the claim
#: that Eigen-SAM lowers it more is not reproduced here. What holds is that they agree; within 5% in one seed.
TOP_AGREE = 0.05


def test_eigensam_aligns_better_but_ends_as_sharp_as_sam() -> None:
    sam = eigensam_alignment.one_run("mlp", "sam", 0)
    eigensam = eigensam_alignment.one_run("mlp", "eigensam", 0)
    assert eigensam["alignment"] - sam["alignment"] >= ALIGNMENT_GAIN, (eigensam["alignment"], sam["alignment"])
    assert abs(eigensam["top_eigenvalue"] / sam["top_eigenvalue"] - 1) < TOP_AGREE, (
        eigensam["top_eigenvalue"],
        sam["top_eigenvalue"],
    )


#: Full run (MLP, rho 0.05, momentum 0, 3 seeds): at lr 2.1 every SSAM seed trained, to final train losses
#: 0.0026-0.0036 (SAM: 2 of 3 trained, losses 1.9e-8, 0.74 and 1.46); at lr 2.3 no SAM seed trained; at lr 3
#: every run of both became inf. So SSAM trains at least up to where SAM stops, but both fail from 2.5: the claim
#: (SSAM's largest training lr above SAM's in every seed) is not reproduced (a tie in seed 1). These are the
#: orderings that held in every seed.
SSAM_LOSS_AT_2_1 = 0.01


def test_ssam_trains_where_sam_starts_to_fail_and_both_fail_at_lr_3() -> None:
    ssam = ssam_lr.one_run("ssam", 2.1, 0)
    assert ssam["trains"] and ssam["train_loss"] < SSAM_LOSS_AT_2_1, ssam["train_loss"]
    sam = ssam_lr.one_run("sam", 2.3, 0)
    assert not sam["trains"], sam["train_loss"]
    for opt in ("sam", "ssam"):
        row = ssam_lr.one_run(opt, 3.0, 0)
        assert row["diverged_at"] is not None and not row["trains"], (opt, row["train_loss"])
