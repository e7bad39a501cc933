"""Data parallelism is exact for every method: two gloo processes, each given half of every
batch, end with the parameters of one process given the whole batch, and take the same
decisions (dominant modality, ...) at every step."""

from __future__ import annotations

import pytest
import torch

from clinfuse.models.methods import METHODS
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
    Case("igm", {"hidden": 4}, whole_split=True),
    Case("igm", {"hidden": 4, "inner_iters": 2}, task_type="multilabel", name="igm-inner-iters"),
    Case("medfuse", {"pretrain_epochs": 1}),
    Case("drfuse", task_type="multilabel"),
    Case("drfuse", name="drfuse-multiclass"),
    Case("mla", whole_split=True),
    Case("mla", task_type="multilabel", name="mla-multilabel"),
]
CASES += [  # balancing baselines: coefficients, weights and prototypes from the global batch's statistics
    Case("ogm_ge", {"alpha": 0.8}, same_on_every_rank=("coeff_ehr", "coeff_cxr")),
    Case("ogm_ge", {"alpha": 0.8, "ge": False, "lambda_m": 1.0}, task_type="multilabel",
         same_on_every_rank=("coeff_ehr", "coeff_cxr"), name="ogm-multilabel"),
    Case("agm", same_on_every_rank=("coeff_ehr", "coeff_cxr", "target_ratio_ehr")),
    Case("agm", {"alpha": 2.0}, task_type="binary", same_on_every_rank=("coeff_ehr", "coeff_cxr"),
         name="agm-binary"),
    # held-out rows leave the shards unequal; estimation batches of 5 leave a rank idle at each epoch's end
    # (holdout_seed 3: every head gets a weight strictly between 0 and 1 at both estimates)
    Case("gblend", {"super_epoch": 1, "holdout_fraction": 0.25, "estimate_batch_size": 5, "holdout_seed": 3},
         task_type="binary", whole_split=True, same_on_every_rank=("weight_fused", "weight_ehr", "weight_cxr")),
    Case("pmr", {"prototype_fraction": 0.5, "per_epochs": 1}, whole_split=True,
         same_on_every_rank=("dominant", "coef_ehr", "coef_cxr")),
    Case("pmr", {"prototype_fraction": 1.0, "alpha": 2.0}, task_type="binary", whole_split=True,
         same_on_every_rank=("dominant", "coef_ehr", "coef_cxr"), name="pmr-binary"),
    Case("inforeg", {"alpha": 0.9, "history": 1, "threshold": 0.2}, epochs=3,
         same_on_every_rank=("beta_ehr", "beta_cxr", "fisher_ehr", "fisher_cxr", "in_window_ehr", "in_window_cxr")),
    Case("inforeg", {"alpha": 0.5, "score_reduction": "sum"}, task_type="multilabel",
         same_on_every_rank=("beta_ehr", "beta_cxr", "fisher_ehr"), name="inforeg-multilabel"),
    Case("mmpareto", {"lambda_m": 2.0}, same_on_every_rank=("weight_mm_ehr", "weight_mm_cxr", "conflict_cxr")),
    Case("mmpareto", {"scale": 1.5}, task_type="multilabel",
         same_on_every_rank=("weight_mm_ehr", "weight_mm_cxr", "conflict_ehr"), name="mmpareto-multilabel"),
    Case("aug", {"hidden": 3, "max_classifiers": 2}, epochs=3,
         same_on_every_rank=("classifiers_ehr", "classifiers_cxr", "boosted")),
    Case("aug", {"hidden": 3, "max_classifiers": 2, "tolerance": 0.001}, task_type="multilabel", epochs=3,
         same_on_every_rank=("classifiers_ehr", "classifiers_cxr", "boosted"), name="aug-multilabel"),
]

TOLERANCE = 1e-9


@pytest.fixture(scope="module")
def two_ranks(request, tmp_path_factory):
    # only the cases this session runs (`-k masam` starts two ranks for the MASAM cases alone); only this
    # module's items: another module may name a parameter "case" too
    chosen = {item.callspec.params["case"].id for item in request.session.items
              if getattr(item, "module", None) is request.module and hasattr(item, "callspec")
              and "case" in item.callspec.params}
    return run_distributed([c for c in CASES if c.id in chosen], tmp_path_factory.mktemp("ddp"), world=2)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_two_processes_with_half_batches_end_with_the_parameters_of_one_process_with_the_whole_batch(
        case, two_ranks):
    single = run_case(case, rank=0, world=1)
    for rank, results in enumerate(two_ranks):
        diff = (results[case.id]["params"] - single["params"]).abs().max().item()
        assert diff < TOLERANCE, f"rank {rank}: max |param difference| {diff:.3g}"
        decided = results[case.id]["decisions"]
        assert decided == two_ranks[0][case.id]["decisions"], f"rank {rank} decided otherwise than rank 0"
        assert [d.keys() for d in decided] == [d.keys() for d in single["decisions"]]
        worst = max((abs(d[k] - s[k]) for d, s in zip(decided, single["decisions"], strict=True)
                     for k in d), default=0.0)
        assert worst <= TOLERANCE, f"rank {rank} decided otherwise than one process (by {worst:.3g})"


def test_the_parameters_move_so_the_comparison_is_not_vacuous():
    case = CASES[0]
    torch.manual_seed(0)
    before = run_case(Case(case.method, epochs=0), rank=0, world=1)["params"]
    after = run_case(case, rank=0, world=1)["params"]
    assert (after - before).abs().max().item() > 1e-3


def test_every_registered_method_is_checked():
    assert set(METHODS) <= {case.method for case in CASES}, "methods without a data-parallel case"
