"""Data parallelism is exact for every method: two gloo processes, each given half of every
batch, end with the parameters of one process given the whole batch, and take the same
decisions (dominant modality, ...) at every step."""

from __future__ import annotations

import pytest
import torch

from models.methods import METHODS
from tests.distributed.harness import Case, run_case, run_distributed

CASES = [
    Case("late_fusion"),
    Case("late_fusion", task_type="multilabel", name="late_fusion-multilabel"),
    Case("unimodal", {"modality": "cxr"}),
    Case("sam", {"rho": 0.05}),
    Case("sam", {"rho": 0.05}, task_type="multilabel", name="sam-multilabel"),
    # beta, alpha chosen so that the dominant modality changes between steps (the decision is exercised)
    Case("masam", {"rho": 0.3, "beta": 0.5}, task_type="multilabel",
         same_on_every_rank=("dominant", "negative_gamma"), name="masam-paper"),
    Case("masam", {"rho": 0.3, "variant": "reference", "alpha": 0.9, "beta": 0.5},
         same_on_every_rank=("dominant", "negative_gamma"), name="masam-reference"),
    Case("masam", {"rho": 0.3, "score": "ogm"}, task_type="binary", same_on_every_rank=("dominant",),
         name="masam-ogm-score"),
    Case("masam", {"rho": 0.3, "aps": False}, same_on_every_rank=("negative_gamma",), name="masam-no-aps"),
    Case("igm", {"hidden": 4}),
    Case("igm", {"hidden": 4, "inner_iters": 2}, task_type="multilabel", name="igm-inner-iters"),
    Case("medfuse", {"pretrain_epochs": 1}),
    Case("drfuse", task_type="multilabel"),
    Case("drfuse", name="drfuse-multiclass"),
    Case("mla"),
    Case("mla", task_type="multilabel", name="mla-multilabel"),
]

TOLERANCE = 1e-9


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    return run_distributed(CASES, tmp_path_factory.mktemp("ddp"), world=2)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_two_processes_with_half_batches_end_with_the_parameters_of_one_process_with_the_whole_batch(
        case, two_ranks):
    single = run_case(case, rank=0, world=1)
    for rank, results in enumerate(two_ranks):
        diff = (results[case.id]["params"] - single["params"]).abs().max().item()
        assert diff < TOLERANCE, f"rank {rank}: max |param difference| {diff:.3g}"
        assert results[case.id]["decisions"] == single["decisions"], f"rank {rank} decided otherwise"


def test_the_parameters_move_so_the_comparison_is_not_vacuous():
    case = CASES[0]
    torch.manual_seed(0)
    before = run_case(Case(case.method, epochs=0), rank=0, world=1)["params"]
    after = run_case(case, rank=0, world=1)["params"]
    assert (after - before).abs().max().item() > 1e-3


def test_every_registered_method_is_checked():
    assert set(METHODS) <= {case.method for case in CASES}, "methods without a data-parallel case"
