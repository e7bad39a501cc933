"""MASAM's step beyond the paper-variant update that test_masam_math checks by hand: the reference
variant's update, the models it must cope with (an encoder parameter no feature reaches, heads that
share a node, dropout), what it reports and what it leaves behind."""

from __future__ import annotations

import importlib
import weakref

import pytest
import torch
from torch import nn

from clinfuse.models.fusion import FusionModel, FusionOutput
from clinfuse.models.methods import METHODS
from tests.models.test_masam_math import F64, Y, batch, hand_masam_step, params_of, run_method, scalar_model
from tests.models.tiny_fusion import ScalarEncoder, softmax, tiny_batch, tiny_model

MODS = ["ehr", "cxr"]
bce = nn.functional.binary_cross_entropy_with_logits


def masam(model, **options):
    return METHODS["masam"](model, torch.optim.SGD(model.parameters(), lr=1.0), "binary", **options)


def parameters(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def assert_same_parameters(a: list[torch.Tensor], b: list[torch.Tensor], atol: float = 1e-12) -> None:
    assert len(a) == len(b)
    for pa, pb in zip(a, b, strict=True):
        assert torch.allclose(pa, pb, rtol=0, atol=atol), (pa, pb)


# --- the reference variant's update ----------------------------------------------------------


def test_the_reference_update_is_the_total_loss_gradient_at_the_perturbed_point_for_every_encoder():
    # the released code: L_total's gradient at theta_d + eps replaces EVERY encoder's gradient, with no
    # lambda g_u added; the heads keep their unperturbed gradient of L_total (module docstring, point c)
    lam, rho = 0.5, 0.4
    model, naive = scalar_model(), scalar_model()
    masam(model, rho=rho, dominant="ehr", variant="reference", lambda_m=lam).step(batch(MODS))

    def losses(m):
        out = m(batch(MODS)["inputs"], batch(MODS)["present"])
        l_fuse, l_uni = bce(out.fused, Y), {k: bce(out.unimodal[k], Y) for k in MODS}
        return l_fuse, l_uni, l_fuse + lam * sum(l_uni.values())

    enc = [naive.encoders[m].a for m in MODS] + [naive.encoders[m].c for m in MODS]
    heads = [p for p in naive.parameters() if all(p is not q for q in enc)]
    l_fuse, l_uni, l_total = losses(naive)
    a, c = naive.encoders["ehr"].a, naive.encoders["ehr"].c
    g_f = torch.autograd.grad(l_fuse, [a, c], retain_graph=True)
    g_u = torch.autograd.grad(l_uni["ehr"], [a, c], retain_graph=True)
    head_grads = torch.autograd.grad(l_total, heads)
    # per tensor, u = the projection of g_u on g_f (for a scalar: g_u itself) where they agree, else
    # g_f; one norm over the encoder; the last tensor's cosine of two scalars is +1 or -1 -> c = 1
    u = [gu if float(gf * gu) >= 0 else gf for gf, gu in zip(g_f, g_u, strict=True)]
    u_norm = torch.sqrt(sum((t**2).sum() for t in u))
    with torch.no_grad():
        a.add_(rho * u[0] / u_norm)
        c.add_(rho * u[1] / u_norm)
    sharp = torch.autograd.grad(losses(naive)[2], enc)
    with torch.no_grad():
        a.sub_(rho * u[0] / u_norm)
        c.sub_(rho * u[1] / u_norm)
        for p, g in zip(enc + heads, list(sharp) + list(head_grads), strict=True):
            p.sub_(g)  # SGD, lr = 1
    assert_same_parameters(parameters(model), parameters(naive))


# --- models the step must cope with ----------------------------------------------------------


@pytest.mark.parametrize("variant", ["paper", "reference"])
def test_an_encoder_parameter_no_feature_reaches_is_left_alone_and_no_gradient_is_kept(variant):
    # e.g. a pretrained backbone's classifier that the encoder does not call: every vector-Jacobian
    # product through the encoder, and the second pass through the dominant one, must accept it
    model, twin = scalar_model(), scalar_model()
    model.encoders["ehr"].unused = nn.Parameter(torch.tensor([0.7], dtype=F64))
    masam(model, rho=0.5, dominant="ehr", variant=variant).step(batch(MODS))
    masam(twin, rho=0.5, dominant="ehr", variant=variant).step(batch(MODS))
    assert model.encoders["ehr"].unused.item() == 0.7
    # a zero gradient changes no norm and no cosine: every other parameter moves as without it
    assert_same_parameters([p for n, p in model.named_parameters() if not n.endswith("unused")], parameters(twin))
    assert all(p.grad is None for p in model.parameters())  # no gradient memory held between steps


class JointlyNormalisedHeads(FusionModel):
    """Heads reading the features through one node shared by every modality (a joint tanh of the
    stacked features), as a joint normalisation or a shared classifier run once on all would."""

    def heads(self, features, present) -> FusionOutput:
        joint = dict(zip(self.modalities, torch.tanh(torch.stack([features[m] for m in self.modalities])).unbind(),
                         strict=True))
        unimodal = {m: self.unimodal_heads[m](joint[m]) for m in self.modalities}
        return FusionOutput(self.fuse(joint, present), unimodal, features)


def test_heads_sharing_a_node_across_modalities_step_like_late_fusion_at_radius_zero():
    # every unimodal loss is differentiated through the shared node in turn: the first must not free it
    def model():
        m = JointlyNormalisedHeads({"ehr": ScalarEncoder(0.8, -0.3), "cxr": ScalarEncoder(-0.5, 0.4)}, 1).double()
        torch.manual_seed(0)
        with torch.no_grad():
            for p in m.parameters():
                p.uniform_(-1, 1)
        return m

    late, zero = model(), model()
    run_method("late_fusion", late, MODS)
    run_method("masam", zero, MODS, rho=0.0)
    assert_same_parameters(parameters(zero), parameters(late))


class DropoutEncoder(ScalarEncoder):
    """z = dropout(a x + c): half the samples' features are zeroed, the rest doubled."""

    def forward(self, x):
        return nn.functional.dropout(super().forward(x), p=0.5, training=self.training)


@pytest.mark.parametrize("variant", ["paper", "reference"])
def test_the_second_pass_replays_the_first_pass_dropout_masks(variant):
    # at radius 0 the perturbed point is the current one: with the same dropout masks the update is late
    # fusion's exactly, and the step leaves the generator where one pass leaves it
    def model():
        torch.manual_seed(0)  # the heads' initial weights
        return FusionModel({"ehr": DropoutEncoder(0.8, -0.3), "cxr": DropoutEncoder(-0.5, 0.4)}, 1).double()

    late, zero = model(), model()
    torch.manual_seed(3)
    run_method("late_fusion", late, MODS)
    after_late = torch.rand(4)
    torch.manual_seed(3)
    run_method("masam", zero, MODS, rho=0.0, dominant="ehr", variant=variant)
    assert_same_parameters(parameters(zero), parameters(late))
    assert torch.equal(torch.rand(4), after_late)


class TanhEncoder(ScalarEncoder):
    """z = tanh(a x + c): an activation the backward needs, saved in the graph."""

    def forward(self, x):
        return torch.tanh(super().forward(x))


class SavedActivation:
    """What the graph holds for one saved tensor, so a weak reference tells when the graph lets go."""

    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor):
        self.tensor = tensor


@pytest.mark.parametrize("variant", ["paper", "reference"])
def test_every_encoder_s_first_pass_activations_are_freed_before_the_second_pass_runs(variant):
    # memory: once g_f,m and g_u,m are taken nothing reads encoder m's first-pass graph again, so the
    # perturbed pass must not run on top of every encoder's activations (benchmarks/masam_memory.py)
    model = FusionModel({"ehr": TanhEncoder(0.8, -0.3), "cxr": TanhEncoder(-0.5, 0.4)}, 1).double()
    encoder_runs, inside, first_pass, held = [], [], [], []

    def before(module, args):
        encoder_runs.append(module)
        inside.append(True)
        if len(encoder_runs) == len(MODS) + 1:  # the second pass starts
            held.append(sum(ref() is not None for ref in first_pass))

    def pack(tensor):
        saved = SavedActivation(tensor)
        if inside and len(encoder_runs) <= len(MODS):
            first_pass.append(weakref.ref(saved))
        return saved

    def after(module, args, out):
        inside.pop()

    for encoder in model.encoders.values():
        encoder.register_forward_pre_hook(before)
        encoder.register_forward_hook(after)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda saved: saved.tensor):
        masam(model, rho=0.5, dominant="cxr", variant=variant).step(batch(MODS))
    assert len(first_pass) >= 2 * len(MODS)  # each encoder saved its input scale and its tanh output
    assert held == [0]


@pytest.mark.parametrize(("method", "options", "replayed"), [
    ("sam", {}, ["before", "after first pass"]),
    ("masam", {"dominant": "cxr"}, ["before cxr", "after forward"]),  # paper: encoder d alone runs again
    ("masam", {"dominant": "cxr", "variant": "reference"}, ["before ehr", "after forward"]),  # the whole model
])
def test_on_an_accelerator_each_replay_restores_its_generator_on_the_model_s_device(monkeypatch, method, options,
                                                                                  replayed):
    # CI has no GPU: the accelerator's generator is stood in for by a labelled state, and restoring it is
    # recorded; on a real one, a state restored to the wrong device (or none) changes the dropout masks
    labels = iter({"sam": ["before", "after first pass"],
                   "masam": ["before ehr", "before cxr", "after forward"]}[method])
    module = importlib.import_module(f"clinfuse.models.methods.{method}")
    monkeypatch.setattr(module, "rng_state", lambda device: (torch.get_rng_state(), next(labels)))
    restored = []
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append((state, device)))
    run_method(method, scalar_model(), MODS, rho=0.3, **options)
    assert restored == [(label, torch.device("cpu")) for label in replayed]


@pytest.mark.parametrize("options", [
    {"dominant": "ehr"},
    {"dominant": "ehr", "variant": "reference", "mdps": False},  # c = 1, made by the step itself
])
def test_every_tensor_the_step_makes_is_on_the_model_s_device_not_torch_s_default(options):
    # CI has no GPU: torch's default device is moved to "meta" instead, so a tensor made without the
    # model's device (a CPU tensor beside a CUDA model, on a GPU) fails here; the update is unchanged
    model, twin = scalar_model(), scalar_model()
    data = batch(MODS)
    method = masam(model, rho=0.5, **options)
    torch.set_default_device("meta")
    try:
        metrics = method.step(data)
    finally:
        torch.set_default_device(None)
    expected = masam(twin, rho=0.5, **options).step(data)
    assert_same_parameters(parameters(model), parameters(twin))
    assert {k: v.device.type for k, v in metrics.items()} == dict.fromkeys(expected, "cpu")
    assert all(torch.equal(metrics[k], expected[k]) for k in expected)


# --- what the step reports ----------------------------------------------------------------------


def test_a_vanishing_unimodal_gradient_has_gamma_zero_which_is_not_counted_as_negative():
    model = scalar_model()
    with torch.no_grad():
        model.unimodal_heads["ehr"].weight.zero_()  # dL_ehr/dz = 0: g_u,ehr = 0, cos = 0 by convention
    _, (metrics,) = run_method("masam", model, MODS, rho=0.5, dominant="ehr")
    assert metrics["gamma_ehr"].item() == 0.0
    assert metrics["negative_gamma"].item() == 0.0
    assert metrics["perturbation_norm"].item() == 0.0  # rho gamma = 0


def test_a_positive_gamma_below_one_is_not_counted_as_negative():
    model = scalar_model()
    _, gamma, *_ = hand_masam_step(params_of(model, MODS), MODS, rho=0.5, alpha=0.5, dominant="ehr")
    assert 0 < gamma["ehr"] < 1
    _, (metrics,) = run_method("masam", model, MODS, rho=0.5, dominant="ehr")
    assert metrics["negative_gamma"].item() == 0.0


def test_the_ogm_score_of_a_multiclass_task_is_the_softmax_probability_of_the_true_class():
    mods = ("a", "v")
    model, data = tiny_model(mods, k=3), tiny_batch(mods, b=4, k=3, task_type="multiclass")
    with torch.no_grad():
        logits = model(data["inputs"], data["present"]).unimodal
    rows = torch.arange(4)
    expected = {m: softmax(logits[m].numpy())[rows, data["y"]].mean() for m in mods}
    method = METHODS["masam"](model, torch.optim.SGD(model.parameters(), lr=1.0), "multiclass", score="ogm")
    metrics = method.step(data)
    for m in mods:
        assert metrics[f"aps_{m}"].item() == pytest.approx(expected[m], abs=1e-12)
    assert mods[int(metrics["dominant"])] == max(expected, key=expected.get)


def test_a_method_that_has_not_stepped_saves_no_loss_history():
    # a checkpoint taken before the first step resumes as a fresh start: MA_m = L_m and Decay_m = 0
    assert masam(scalar_model()).state_dict() == {"moving_average": None, "previous_loss": None}
