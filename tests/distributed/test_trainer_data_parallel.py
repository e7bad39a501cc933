"""`clinfuse train` in several processes trains what one process trains.

Two gloo processes, each taking half of every global batch of the one-process permutation,
end with the validation metric, history and weights of one process given the whole batch
(late fusion, no dropout, BatchNorm synchronised over the ranks; float32, so up to the order
of sums). A run killed on two processes resumes on one to the same result: the checkpoint
does not depend on the number of processes.
"""

from __future__ import annotations

import json
import os
import re

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from clinfuse.models.distributed import broadcast_buffers_
from clinfuse.pipeline.checkpoints import CHECKPOINT_LAST, load_checkpoint
from clinfuse.pipeline.cli import main
from clinfuse.pipeline.config import load_section
from clinfuse.pipeline.data import SplitTensors, shard_bounds
from clinfuse.pipeline.data_parallel import RankSplit
from clinfuse.pipeline.launch import threads_per_process, torchrun_arguments
from clinfuse.pipeline.settings.methods import MethodConfig, method_path
from clinfuse.pipeline.settings.train import TrainSettings
from clinfuse.pipeline.trainer import RunSpec, StopTraining, check_resumable, fit

# dropout 0 everywhere: the ranks' masks cannot match one process's
NO_DROPOUT = {
    "ehr": {"name": "ehr_transformer", "d_model": 8, "nhead": 2, "num_layers": 1, "dropout": 0.0},
    "cxr": {"name": "small_cnn", "channels": [4], "out_dim": 8},
}
# float32 weights after 12 SGD steps, sums taken in another order. Not Adam: a parameter whose
# gradient is zero in exact arithmetic (a conv bias before BatchNorm, attention's key bias) gets
# float noise of either sign, and Adam's g / sqrt(v) turns it into a step of +-lr.
WEIGHTS_TOLERANCE = 1e-5
METRIC_TOLERANCE = 1e-6


def run_spec(cohort, out, epochs=3, **train):
    cfg = load_section(MethodConfig, method_path("late_fusion")).check("late_fusion")
    train = {"sync_batchnorm": True, **train}
    settings = TrainSettings(epochs=epochs, batch_size=8, num_threads=1, patience=10, device="cpu",
                             optimizer="sgd", lr=0.05, **train)
    return RunSpec(cohort, "late_fusion", cfg, "tiny", NO_DROPOUT, settings, 3, out)


def igm_spec(cohort, out):
    """IGM: its epoch hook passes over the training split (each rank over its part of every batch)."""
    cfg = load_section(MethodConfig, method_path("igm")).check("igm")
    settings = TrainSettings(epochs=2, batch_size=8, num_threads=1, patience=10, device="cpu", optimizer="sgd",
                             lr=0.05, sync_batchnorm=True)
    return RunSpec(cohort, "igm", cfg, "tiny", NO_DROPOUT, settings, 3, out)


def _worker(rank: int, world: int, init_file: str, cohort: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        summaries = {"full": fit(run_spec(cohort, f"{out_dir}/full"), track=False)}
        try:
            fit(run_spec(cohort, f"{out_dir}/killed"), track=False, stop_after_epoch=1)
        except StopTraining:
            summaries["killed"] = "stopped"
        # the default: each rank's own BatchNorm statistics, rank 0's copied to all after each step
        summaries["shard_bn"] = fit(run_spec(cohort, f"{out_dir}/shard-bn", epochs=2, sync_batchnorm=False),
                                    track=False)
        summaries["igm"] = fit(igm_spec(cohort, f"{out_dir}/igm"), track=False)
        norm = torch.nn.BatchNorm1d(3)
        norm.running_mean.fill_(float(rank + 1))
        norm.num_batches_tracked.fill_(10 * (rank + 1))
        broadcast_buffers_(norm)
        summaries["buffers"] = (norm.running_mean.tolist(), int(norm.num_batches_tracked))
        torch.save(summaries, f"{out_dir}/summary-rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, request):
    cohort = request.getfixturevalue("mimic_cohort")
    out = tmp_path_factory.mktemp("two-processes")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(2, str(out / "rendezvous"), str(cohort), str(out)), nprocs=2, join=True)
    summaries = [torch.load(out / f"summary-rank{r}.pt", weights_only=False) for r in range(2)]
    return out, summaries


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, request):
    out = tmp_path_factory.mktemp("one-process")
    return out, fit(run_spec(request.getfixturevalue("mimic_cohort"), out / "full"), track=False)


@pytest.fixture(scope="module")
def mimic_cohort(tmp_path_factory):
    from tests.fixtures.cohorts import write_cohort

    # every stay has its film: a unimodal loss averaged over a shard's present samples is the
    # global one only when the shards hold as many (the methods' business, not the trainer's)
    return write_cohort(tmp_path_factory.mktemp("cohorts") / "mimic-phenotype", "mimic", missing_image=0.0)


def _weights(run_dir):
    return load_checkpoint(run_dir / CHECKPOINT_LAST)["model"]


def _assert_same_training(a_dir, b_dir):
    a_hist = json.loads((a_dir / "history.json").read_text())
    b_hist = json.loads((b_dir / "history.json").read_text())
    assert len(a_hist) == len(b_hist)
    for ra, rb in zip(a_hist, b_hist, strict=True):
        assert ra.keys() == rb.keys()
        for k in ra:
            assert ra[k] == pytest.approx(rb[k], abs=METRIC_TOLERANCE), (ra["epoch"], k)
    wa, wb = _weights(a_dir), _weights(b_dir)
    for name, t in wa.items():
        if t.is_floating_point():
            diff = (t - wb[name]).abs().max().item()
            assert diff < WEIGHTS_TOLERANCE, f"{name}: max |difference| {diff:.3g}"
        else:
            assert torch.equal(t, wb[name]), name


def test_two_processes_end_with_the_validation_metric_and_weights_of_one_process(two_processes, one_process):
    (two_dir, summaries), (one_dir, single) = two_processes, one_process
    for summary in summaries:  # both ranks report the run rank 0 wrote
        assert summary["full"]["best_val_metric"] == pytest.approx(single["best_val_metric"], abs=METRIC_TOLERANCE)
        assert summary["full"]["best_epoch"] == single["best_epoch"]
        assert summary["full"]["steps"] == single["steps"] == 12  # 28 rows in global batches of 8, 3 epochs
    assert summaries[0]["full"]["processes"] == 2
    written = json.loads((two_dir / "full" / "train_summary.json").read_text())
    assert written["processes"] == 2 and written["best_val_metric"] == summaries[0]["full"]["best_val_metric"]
    _assert_same_training(two_dir / "full", one_dir / "full")


def test_the_weights_moved_so_the_comparison_is_not_vacuous(one_process, mimic_cohort, tmp_path):
    one_dir, _ = one_process
    with pytest.raises(StopTraining):
        fit(run_spec(mimic_cohort, tmp_path / "short"), track=False, stop_after_epoch=1)
    moved = max((t - _weights(one_dir / "full")[k]).abs().max().item()
                for k, t in _weights(tmp_path / "short").items() if t.is_floating_point())
    assert moved > 100 * WEIGHTS_TOLERANCE


def test_a_run_killed_on_two_processes_resumes_on_one_to_the_same_result(two_processes, one_process, mimic_cohort):
    (two_dir, summaries), (one_dir, single) = two_processes, one_process
    assert all(s["killed"] == "stopped" for s in summaries)
    resumed = fit(run_spec(mimic_cohort, two_dir / "killed", nproc=2), resume=True, track=False)
    assert resumed["best_val_metric"] == pytest.approx(single["best_val_metric"], abs=METRIC_TOLERANCE)
    _assert_same_training(two_dir / "killed", one_dir / "full")


def _igm_histories(two_processes, tmp_path, cohort):
    two_dir, _ = two_processes
    fit(igm_spec(cohort, tmp_path / "igm"), track=False)
    return [json.loads((d / "igm" / "history.json").read_text()) for d in (two_dir, tmp_path)]


def test_a_method_whose_epoch_hook_passes_over_the_split_trains_on_two_processes_as_on_one(
        two_processes, mimic_cohort, tmp_path):
    two, one = _igm_histories(two_processes, tmp_path, mimic_cohort)
    assert len(two) == len(one) == 2
    for a, b in zip(two, one, strict=True):
        for key in [k for k in b if k.startswith(("train_", "val_"))]:
            assert a[key] == pytest.approx(b[key], abs=METRIC_TOLERANCE), (b["epoch"], key)


def test_igm_s_feature_spectrum_on_two_processes_is_one_process_s(two_processes, mimic_cohort, tmp_path):
    # Y (Eq. 2) sums over the GLOBAL training batches: with each rank's half batch as the pass's batch size,
    # two processes summed twice as many, smaller batches (lambda_max 12.5 against 7.2 at epoch 1)
    two, one = _igm_histories(two_processes, tmp_path, mimic_cohort)
    for a, b in zip(two, one, strict=True):
        keys = [k for k in b if k.startswith("epoch/igm_")]
        assert any("lambda_max" in k for k in keys)
        for key in keys:  # lambda_min is float noise around 0 (a rank-deficient Y): compared absolutely
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-9), (b["epoch"], key)


def test_without_sync_batchnorm_every_rank_takes_rank_0s_batchnorm_statistics(two_processes):
    _, summaries = two_processes
    assert [s["buffers"] for s in summaries] == [([1.0, 1.0, 1.0], 10)] * 2
    assert summaries[0]["shard_bn"]["epochs_run"] == summaries[1]["shard_bn"]["epochs_run"] == 2
    assert summaries[0]["shard_bn"]["best_val_metric"] == summaries[1]["shard_bn"]["best_val_metric"]


# --- the pieces, in one process -----------------------------------------------------


def _split(n: int) -> SplitTensors:
    x = torch.arange(n, dtype=torch.float32)[:, None]
    return SplitTensors(torch.arange(n).numpy(), {"ehr": x}, {"ehr": torch.ones(n, dtype=torch.bool)}, torch.arange(n))


def test_the_ranks_together_take_each_global_batch_of_one_process_in_its_order():
    split = _split(14)
    one = [b["index"].tolist() for b in split.batches(4, torch.Generator().manual_seed(5))]
    ranks = [[b["index"].tolist() for b in split.batches(4, torch.Generator().manual_seed(5), r, 2)] for r in (0, 1)]
    assert [len(b) for b in one] == [4, 4, 4, 2]
    for step, batch in enumerate(one):
        assert ranks[0][step] + ranks[1][step] == batch  # rank 0 the first half, rank 1 the second


def test_an_uneven_last_batch_is_padded_with_the_first_samples_of_the_epoch():
    split = _split(10)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(5)).tolist()
    ranks = [[b["index"].tolist() for b in split.batches(4, torch.Generator().manual_seed(5), r, 4)]
             for r in range(4)]
    last = [ranks[r][-1] for r in range(4)]  # global batch 3 holds 2 samples: padded to 4 with order[0], order[1]
    assert last == [[order[8]], [order[9]], [order[0]], [order[1]]]


def test_a_global_batch_that_does_not_split_evenly_is_refused():
    with pytest.raises(ValueError, match="not divisible by 3"):
        next(_split(10).batches(8, None, 0, 3))


def test_validation_shards_concatenate_to_the_split_in_row_order():
    split = _split(7)
    assert shard_bounds(7, 3) == [0, 3, 5, 7]
    parts = [split.shard(r, 3) for r in range(3)]
    assert torch.cat([p.y for p in parts]).tolist() == list(range(7))
    assert sum(len(p) for p in parts) == 7


def test_an_epoch_hook_sees_the_whole_split_and_passes_over_its_rank_part_of_each_batch():
    split = _split(11)
    views = [RankSplit(split, 4, r, 3) for r in range(3)]
    assert all(len(v) == 11 and v.y is split.y for v in views)  # the whole split's rows
    parts = [[b["index"].tolist() for b in v.batches(5)] for v in views]
    # batches of 5, 5, 1 rows (in order: no generator), each cut into parts of 2, 2, 1 rows
    assert parts == [[[0, 1], [5, 6], [10]], [[2, 3], [7, 8]], [[4], [9]]]


@pytest.mark.parametrize("n", [13, 14, 16])
def test_a_hook_knows_how_many_samples_its_rank_trains_on_per_epoch(n):
    split = _split(n)
    for r in range(2):
        trained = sum(len(b["y"]) for b in split.batches(4, torch.Generator().manual_seed(1), r, 2))
        assert RankSplit(split, 4, r, 2).rank_samples == trained


def test_processes_on_one_machine_share_its_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(8)), raising=False)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert threads_per_process(8) == 2 and threads_per_process(1) == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert threads_per_process(4) == 1


def test_train_nproc_relaunches_the_same_command_under_torchrun():
    argv = ["--params", "p.yaml", "train", "--cohort", "c", "--method", "masam"]
    assert torchrun_arguments(4, argv) == ["--standalone", "--nnodes", "1", "--nproc_per_node", "4",
                                           "--module", "pipeline", *argv]


def test_a_global_batch_not_divisible_by_the_processes_is_a_one_line_error(mimic_cohort, tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  batch_size: 8\n  nproc: 3\n")
    code = main(["--params", str(params), "train", "--cohort", str(mimic_cohort), "--method", "late_fusion",
                 "--no-tracking", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "train.batch_size: 8 is the global batch and must be divisible by the 3 processes" in err


def test_a_run_may_resume_on_another_number_of_processes_but_not_with_another_batch():
    saved = {"train": TrainSettings(nproc=1).model_dump()}
    check_resumable(saved, {"train": TrainSettings(nproc=4).model_dump()})
    with pytest.raises(Exception, match="train.batch_size"):
        check_resumable(saved, {"train": TrainSettings(batch_size=64).model_dump()})


def test_a_setting_added_after_a_run_started_counts_as_its_default():
    saved = {"train": {k: v for k, v in TrainSettings().model_dump().items() if k not in ("nproc", "sync_batchnorm")}}
    check_resumable(saved, {"train": TrainSettings().model_dump()})


@pytest.mark.slow
def test_clinfuse_train_with_nproc_2_runs_under_torchrun_and_writes_one_run_folder(mimic_cohort, tmp_path):
    """The real launcher: `clinfuse train` with train.nproc 2 starts torchrun (about 30 s on 2 cores)."""
    import subprocess
    import sys

    params = tmp_path / "params.yaml"
    params.write_text("train:\n  epochs: 2\n  batch_size: 8\n  num_threads: 1\n  device: cpu\n  nproc: 2\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "clinfuse.pipeline", "--params", str(params), "train", "--cohort",
                           str(mimic_cohort), "--method", "late_fusion", "--no-tracking", "--out",
                           str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "starting 2 processes with torchrun" in done.stderr
    assert done.stdout.count("trained late_fusion") == 1  # rank 0 alone reports
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["processes"] == 2 and summary["epochs_run"] == 2


@pytest.mark.slow
def test_an_error_inside_the_ranks_ends_the_launch_with_its_one_line_and_exit_code_2(mimic_cohort, tmp_path):
    import subprocess
    import sys

    params = tmp_path / "params.yaml"
    params.write_text("train:\n  epochs: 1\n  batch_size: 8\n  num_threads: 1\n  device: cpu\n  nproc: 2\n")
    fit(run_spec(mimic_cohort, tmp_path / "run", epochs=1), track=False)  # a finished run, trained with other settings
    done = subprocess.run([sys.executable, "-m", "clinfuse.pipeline", "--params", str(params), "train", "--cohort",
                           str(mimic_cohort), "--method", "late_fusion", "--no-tracking", "--resume", "--out",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2
    assert "clinfuse train: error: cannot resume: the run's configuration changed" in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"clinfuse: rank [01] of 2 exited with code 2; its message is above", last), last
    assert "Traceback" not in done.stderr
