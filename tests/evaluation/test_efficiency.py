"""Efficiency figures with answers known by hand: the spread of given timings, the order of timed calls,
and the peak tensor memory of work whose allocations are known (evaluation/efficiency.py), then the
per-method measurement of pipeline/efficiency.py on a tiny model."""

from __future__ import annotations

import pytest
import torch

from clinfuse.evaluation.efficiency import CLOCKS, peak_allocations, running_peak, spread, time_calls
from clinfuse.pipeline.efficiency import measure_methods, memory_description

FLOAT = 4  # bytes per float32


def test_spread_of_one_to_five_seconds_is_median_three_quartiles_two_and_four_in_ms():
    assert spread([5.0, 1.0, 4.0, 2.0, 3.0]) == {"median": 3000.0, "q1": 2000.0, "q3": 4000.0,
                                                 "min": 1000.0, "max": 5000.0, "n": 5}


def test_spread_interpolates_quartiles_and_applies_the_scale():
    # [0, 10, 20, 30] s: q1 at position 0.75 -> 7.5, median 15, q3 at 2.25 -> 22.5; scale 1000/8 = ms per sample
    s = spread([0.0, 10.0, 20.0, 30.0], scale=1000.0 / 8)
    assert s["q1"] == pytest.approx(7.5 * 125) and s["median"] == pytest.approx(15 * 125)
    assert s["q3"] == pytest.approx(22.5 * 125) and s["max"] == pytest.approx(30 * 125)


def test_spread_refuses_no_timings():
    with pytest.raises(ValueError, match="no timings"):
        spread([])


def test_running_peak_counts_from_zero_and_never_below():
    assert running_peak([4, 2, -4, 1]) == 6
    assert running_peak([-3, 2]) == 0
    assert running_peak([]) == 0


def test_timed_calls_are_warmed_up_each_then_interleaved_round_by_round():
    calls = []
    times = time_calls({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=2)
    assert calls == ["a", "a", "b", "b", "a", "b", "a", "b", "a", "b"]
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}


def test_a_call_that_sleeps_20_ms_is_timed_at_least_20_ms():
    import time

    times = time_calls({"sleep": lambda: time.sleep(0.02)}, repeats=2, warmup=0)
    assert min(times["sleep"]) >= 0.02


def test_sleeping_costs_wall_time_but_almost_no_cpu_time():
    import time

    sleep = {"sleep": lambda: time.sleep(0.05)}
    assert min(time_calls(sleep, repeats=2, warmup=0, clock=CLOCKS["wall"][0])["sleep"]) >= 0.05
    assert max(time_calls(sleep, repeats=2, warmup=0, clock=CLOCKS["cpu"][0])["sleep"]) < 0.01


def test_time_calls_refuses_no_repeats():
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        time_calls({"a": lambda: None}, repeats=0)


def _known_allocations():
    a = torch.empty(1_000_000)  # 4,000,000 bytes
    b = torch.empty(500_000)  # 2,000,000 bytes: 6,000,000 live, the peak
    del a
    c = torch.empty(250_000)  # 1,000,000 bytes: 3,000,000 live
    return b, c


def test_cpu_peak_is_the_largest_amount_allocated_at_once_not_the_total():
    assert peak_allocations({"known": _known_allocations}) == {"known": 6_000_000}


def test_each_callable_in_one_session_gets_its_own_peak_and_freeing_earlier_memory_counts_nothing():
    kept: list[torch.Tensor] = []

    def keep():
        kept.append(torch.empty(2_000_000))  # 8,000,000 bytes, still live when the next callable starts

    def free_earlier():
        kept.clear()  # -8,000,000, then +400 bytes: below what was live at its start
        return torch.empty(100)

    peaks = peak_allocations({"known": _known_allocations, "keep": keep, "free": free_earlier,
                              "small": lambda: torch.empty(10)})
    assert peaks == {"known": 6_000_000, "keep": 8_000_000, "free": 0, "small": 10 * FLOAT}


class _Scratch(torch.nn.Module):
    """A forward that allocates a known scratch tensor: `[n]` float32 zeros, summed to a scalar."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(self.n).sum() + x.sum()


def test_a_forward_that_allocates_an_8_mb_scratch_tensor_peaks_at_8_mb():
    model, x = _Scratch(2_000_000), torch.ones(4)
    with torch.no_grad():
        peak = peak_allocations({"forward": lambda: model(x)})["forward"]
    assert 2_000_000 * FLOAT <= peak < 2_000_000 * FLOAT + 1024  # plus a few scalars


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_peak_is_max_memory_allocated_above_the_start():
    def known():
        a = torch.empty(1_000_000, device="cuda")
        b = torch.empty(500_000, device="cuda")
        del a
        return b

    peak = peak_allocations({"known": known}, "cuda")["known"]
    assert 6_000_000 <= peak < 6_000_000 + 2 * 512  # the caching allocator rounds each block to 512 bytes


ENCODERS = {"ehr": {"name": "ehr_transformer", "d_model": 8, "nhead": 2, "num_layers": 1, "dropout": 0.0},
            "cxr": {"name": "small_cnn", "channels": [2, 4], "out_dim": 8}}
SHAPES = {"ehr": (6, 4), "cxr": (1, 16, 16)}


def test_methods_are_measured_in_this_process_with_the_callers_threads_and_random_state_restored():
    from clinfuse.models.build import build_model

    threads, rng = torch.get_num_threads(), torch.random.get_rng_state()
    rows = measure_methods({"late_fusion": ("late_fusion", {}), "again": ("late_fusion", {}), "sam": ("sam", {})},
                           ENCODERS, SHAPES, 3, "multilabel", batch=4, repeats=3, warmup=1, threads=1)
    assert torch.get_num_threads() == threads and torch.equal(torch.random.get_rng_state(), rng)
    assert all(r["step_ms"]["n"] == 3 and r["inference_ms_per_sample"]["n"] == 3 for r in rows.values())
    assert rows["late_fusion"]["ratio_to_late_fusion"] == 1.0
    # The same method twice: the same memory to the byte (it is counted, not sampled from the process).
    assert rows["again"]["peak_memory_mib"] == rows["late_fusion"]["peak_memory_mib"]
    # At AdamW's first update the weights, their gradients and both moment estimates are live: >= 4 x weights.
    weights = sum(p.numel() * p.element_size()
                  for p in build_model(ENCODERS, list(SHAPES), SHAPES, 3, task_type="multilabel").parameters())
    assert rows["late_fusion"]["peak_memory_mib"] * 2**20 >= 4 * weights
    # SAM keeps the ascent perturbation (one tensor per weight) on top of what late fusion holds.
    assert rows["sam"]["peak_memory_mib"] > rows["late_fusion"]["peak_memory_mib"]


def test_an_unknown_clock_is_refused_by_name():
    with pytest.raises(ValueError, match="efficiency clock 'gpu'"):
        measure_methods({"late_fusion": ("late_fusion", {})}, ENCODERS, SHAPES, 3, "multilabel", clock="gpu")


def test_the_memory_figure_says_what_it_is_on_each_device():
    assert "torch profiler allocation events" in memory_description("cpu")
    assert "max_memory_allocated" in memory_description("cuda")
    assert "not the process's resident size" in memory_description("cpu")
