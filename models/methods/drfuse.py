"""DrFuse (Yao et al., AAAI 2024): disentangled shared/distinct representations and
disease-aware attention, for EHR + an image that may be missing.

Network (`DrFuseModel`), for two modalities a (the anchor: EHR, or ADNI's tabular)
and b (the image: CXR, or MRI). Per modality m, two encoders of the configured
kind: a shared branch and a distinct branch (the second is a copy of the
configured encoder with freshly initialised weights), each followed by a linear
map to the common width d, giving s_m and r_m `[B, d]`.
  - Shared: h_m = MLP(s_m) (one MLP, d -> 2d -> d -> d with ReLU, for both
    modalities). Logit pooling fuses them: with sigma(h_m) read as per-dimension
    Bernoulli parameters, the shared representation is the logit of their mixture,
        h = logit((sigma(h_a) + sigma(h_b)) / 2)
          = logaddexp(log sigma(h_a), log sigma(h_b)) - logaddexp(log sigma(-h_a), log sigma(-h_b)).
    When b is missing, h = h_a (the shared representation stands in for it; and
    h = h_b when a is missing).
  - Heads: shared prediction W_s h; distinct predictions W_m r_m (`unimodal`).
  - Disease-aware attention: tokens t = [r_a, h, r_b]; one linear map gives per
    token a query q_t, a value v_t and one key k_{c,t} per label c. The query is
    the mean of the PRESENT tokens' queries; per label c,
        alpha_{c,t} = softmax_t(q . k_{c,t} / sqrt(d))   (absent modality's token masked),
        f_c = sum_t alpha_{c,t} v_t,   final_c = (W_f f_c + b_f)_c   (row c of one linear map).
    `fused` = final: the attention output is the prediction. The weights
    alpha `[B, K, 3]` sum to 1 over tokens for every label.

Loss (all coefficients 1, as in the paper):
    L = L_final + lambda_shared L_shared + sum_m lambda_m L_m
        + lambda_jsd L_jsd + lambda_orth sum_m L_orth,m + lambda_rank L_rank
  - L_final, L_shared on every sample; L_m on samples where m is present.
  - L_jsd: JSD(Bern(sigma(h_a)) || Bern(sigma(h_b))), summed over the d dimensions
    with the mixture m = (p + q) / 2 that logit pooling forms, averaged over the
    samples where both modalities are present.
  - L_orth,m = mean |cos(s_m, r_m)| over samples where m is present (the
    distinct representation is pushed orthogonal to the shared one).
  - L_rank: the attention should favour the better branch. Per paired sample
    and label, the detached per-label losses of the distinct (a, b) and shared
    predictions order each pair (b, a), (shared, a), (shared, b): with
    t = sign(l_y - l_x), hinge max(0, -t (alpha_x - alpha_y)) (margin 0); each
    pair's hinges are summed and divided by the number of positive hinges, and
    the three pairs averaged.

Data-parallel training (torchrun, `models.distributed`): one backward, the
gradients averaged over ranks before the step. The masked means (L_m, L_orth,m,
L_jsd) are each rank's mean, averaged, as DDP averages them. The ranking loss is
not a mean over samples but a sum of hinges divided by the number of positive
hinges; a per-rank count would change it even with complete modalities, so the
three counts are summed over ranks (one collective, before the backward) and each
rank's loss is W * (its hinge sum) / (global count), whose rank mean is the whole
batch's loss (the logged `loss_rank` of a rank is that share).

Multi-class tasks (ADNI CN/MCI/AD): the paper defines DrFuse for sigmoid labels.
Its representation terms (logit pooling, JSD, orthogonality) do not involve the
labels and carry over unchanged. The analogue used here: the attention has one
key per class, final_c are class logits under a softmax, every prediction loss
is softmax cross-entropy, and the per-label losses that order the ranking pairs
are one-vs-rest binary cross-entropies of the softmax probabilities,
-[y_c log p_c + (1 - y_c) log(1 - p_c)] with y one-hot.

Where the released code (dorothy-yao/drfuse @a148979) departs, and what this
module does instead:
  - its CXR branch attaches the linear layer to ResNet feature maps without
    pooling and fails on its own shapes; here every branch is a complete encoder
    (pooled features) followed by a linear map to d.
  - it shares the EHR embedding and one transformer layer between the two EHR
    branches and the ResNet stem between the CXR branches; here the branches are
    two whole encoders (the configured encoder and a re-initialised copy).
  - its JSD sums p log(p/m) + q log(q/m) without the (1 - p), (1 - q) terms,
    over ALL samples (unpaired ones compare against a zero image) and divides by
    the number of paired samples; here the Bernoulli JSD over paired samples.
  - the orthogonality and ranking terms, the unimodal losses' masking and the
    ranking normalisation follow the code (paired samples only for b).
  - Adam lr 1e-4, batch 16; here the trainer's optimizer and settings.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from clinfuse.etl.errors import ConfigError

from ..distributed import all_reduce_sum_, is_distributed, world_size
from ..fusion import FusionOutput
from ..losses import task_loss
from ..precision import upcast
from .base import Method


def fresh_copy(module: nn.Module) -> nn.Module:
    """A deep copy whose layers are re-initialised (a second encoder of the same kind)."""
    twin = copy.deepcopy(module)
    for sub in twin.modules():
        for name in ("reset_parameters", "_reset_parameters"):  # MultiheadAttention has the private one
            if sub is not twin and hasattr(sub, name):
                getattr(sub, name)()
                break
    return twin


def logit_pool(h_a: torch.Tensor, h_b: torch.Tensor) -> torch.Tensor:
    """logit((sigmoid(h_a) + sigmoid(h_b)) / 2), computed in log space."""
    log_p = torch.logaddexp(F.logsigmoid(h_a), F.logsigmoid(h_b))
    log_q = torch.logaddexp(F.logsigmoid(-h_a), F.logsigmoid(-h_b))
    return log_p - log_q


def bernoulli_jsd(h_a: torch.Tensor, h_b: torch.Tensor) -> torch.Tensor:
    """`[B]`: sum over dimensions of JSD(Bern(sigmoid(h_a)) || Bern(sigmoid(h_b)))."""
    mix = logit_pool(h_a, h_b)

    def kl(h):  # KL(Bern(sigmoid(h)) || Bern(sigmoid(mix))), from log-probabilities
        p = torch.sigmoid(h)
        return p * (F.logsigmoid(h) - F.logsigmoid(mix)) + (1 - p) * (F.logsigmoid(-h) - F.logsigmoid(-mix))

    return (0.5 * kl(h_a) + 0.5 * kl(h_b)).sum(-1)


def per_label_losses(logits: torch.Tensor, y: torch.Tensor, task_type: str) -> torch.Tensor:
    """`[B, K]` per-label losses: BCE, or one-vs-rest BCE of softmax probabilities (multi-class)."""
    logits = upcast(logits)
    if task_type == "multiclass":
        target = F.one_hot(y.long(), logits.shape[-1]).to(logits.dtype)
        log_p = torch.log_softmax(logits, -1)
        log_not_p = torch.log1p(-log_p.exp().clamp(max=1 - 1e-7))
        return -(target * log_p + (1 - target) * log_not_p)
    return F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype), reduction="none")


def ranking_hinge(alpha_x: torch.Tensor, alpha_y: torch.Tensor, loss_x: torch.Tensor, loss_y: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
    """Margin-0 ranking loss that x gets more attention than y where x's loss is lower.

    All `[B, K]`; `mask` `[B]` selects the samples. Sum of hinges / number of positive hinges.
    """
    total, positives = hinge_sum_and_count(alpha_x, alpha_y, loss_x, loss_y, mask)
    return total / positives.clamp(min=1)


def hinge_sum_and_count(alpha_x: torch.Tensor, alpha_y: torch.Tensor, loss_x: torch.Tensor, loss_y: torch.Tensor,
                        mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`ranking_hinge`'s numerator (sum of hinges, 0-d) and denominator (number of positive hinges, 0-d int)."""
    target = torch.sign(loss_y - loss_x)
    hinge = torch.relu(-target * (alpha_x - alpha_y)) * mask.unsqueeze(1).to(alpha_x.dtype)
    return hinge.sum(), (hinge > 0).sum()


class DrFuseModel(nn.Module):
    """Shared/distinct encoders, logit pooling, disease-aware attention.

    Args:
        encoders: exactly two modalities (anchor first, then the image) -> encoder with `out_dim`.
        num_outputs: K, the number of labels (classes).
        width: common width d of every representation (default: the anchor encoder's out_dim).

    Forward: inputs `{m: [B, ...]}`, present `{m: [B] bool}` -> FusionOutput with
    fused `[B, K]` (attention output), unimodal `{m: [B, K]}` (distinct heads),
    features `{m: [B, d]}` (distinct representations) and extras: `shared` `[B, d]`
    (h), `shared_logits` `[B, K]`, `attention` `[B, K, 3]` (tokens distinct_a, shared, distinct_b),
    `shared_{m}` `[B, d]` (s_m), `projected_{m}` `[B, d]` (h_m).
    """

    def __init__(self, encoders: dict[str, nn.Module], num_outputs: int, width: int | None = None):
        super().__init__()
        if len(encoders) != 2:
            raise ConfigError(f"drfuse: defined for two modalities (EHR-like + image); the cohort has {list(encoders)}")
        self.modalities = list(encoders)
        self.num_outputs = num_outputs
        d = int(width or encoders[self.modalities[0]].out_dim)
        self.width = d
        self.encoders = nn.ModuleDict(encoders)  # shared branches
        self.distinct_encoders = nn.ModuleDict({m: fresh_copy(e) for m, e in encoders.items()})
        self.to_shared = nn.ModuleDict({m: nn.Linear(e.out_dim, d) for m, e in encoders.items()})
        self.to_distinct = nn.ModuleDict({m: nn.Linear(e.out_dim, d) for m, e in encoders.items()})
        self.shared_mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.ReLU(), nn.Linear(2 * d, d), nn.ReLU(), nn.Linear(d, d))
        self.shared_head = nn.Linear(d, num_outputs)
        self.unimodal_heads = nn.ModuleDict({m: nn.Linear(d, num_outputs) for m in self.modalities})
        self.attention_in = nn.Linear(d, (2 + num_outputs) * d)
        self.final_head = nn.Linear(d, num_outputs)

    def forward(self, inputs: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> FusionOutput:
        a, b = self.modalities
        shared = {m: self.to_shared[m](self.encoders[m](inputs[m])) for m in self.modalities}
        distinct = {m: self.to_distinct[m](self.distinct_encoders[m](inputs[m])) for m in self.modalities}
        projected = {m: self.shared_mlp(shared[m]) for m in self.modalities}
        pa, pb = present[a].unsqueeze(1), present[b].unsqueeze(1)
        pooled = logit_pool(projected[a], projected[b])
        h = torch.where(pa & pb, pooled, torch.where(pb & ~pa, projected[b], projected[a]))

        tokens = torch.stack([distinct[a], h, distinct[b]], dim=1)  # [B, 3, d]
        n, k, d = tokens.shape[0], self.num_outputs, self.width
        proj = self.attention_in(tokens).view(n, 3, 2 + k, d)
        q, v, keys = proj[:, :, 0], proj[:, :, 1], proj[:, :, 2:]  # [B,3,d], [B,3,d], [B,3,K,d]
        token_present = torch.stack([present[a], torch.ones_like(present[a]), present[b]], dim=1)  # [B, 3]
        w = token_present.to(q.dtype).unsqueeze(-1)
        query = (q * w).sum(1) / w.sum(1).clamp(min=1.0)  # [B, d]
        scores = torch.einsum("bd,btkd->bkt", query, keys) / math.sqrt(d)  # [B, K, 3]
        scores = scores.masked_fill(~token_present.unsqueeze(1), float("-inf"))
        alpha = torch.softmax(scores, dim=-1)
        feats = torch.einsum("bkt,btd->bkd", alpha, v)  # [B, K, d]
        final = torch.einsum("bkd,kd->bk", feats, self.final_head.weight) + self.final_head.bias

        unimodal = {m: self.unimodal_heads[m](distinct[m]) for m in self.modalities}
        extras = {"shared": h, "shared_logits": self.shared_head(h), "attention": alpha,
                  **{f"shared_{m}": shared[m] for m in self.modalities},
                  **{f"projected_{m}": projected[m] for m in self.modalities}}
        return FusionOutput(final, unimodal, distinct, extras)


class DrFuse(Method):
    """DrFuse's loss, one backward and one optimizer step. See the module docstring.

    Args:
        lambda_m: weight of each distinct (unimodal) prediction loss.
        lambda_shared: weight of the shared prediction loss.
        lambda_jsd: weight of the JSD alignment of the shared representations.
        lambda_orth: weight of each modality's |cos(shared, distinct)|.
        lambda_rank: weight of the attention ranking loss.
        width: common representation width d (a network option, read by `build_model`).
    """

    name = "drfuse"

    @classmethod
    def build_model(cls, encoders, num_outputs, task_type, options):
        return DrFuseModel(encoders, num_outputs, width=options.get("width"))

    def __init__(self, model, optimizer, task_type, lambda_m=1.0, lambda_shared: float = 1.0,
                 lambda_jsd: float = 1.0, lambda_orth: float = 1.0, lambda_rank: float = 1.0,
                 width: int | None = None):
        super().__init__(model, optimizer, task_type, lambda_m)
        self.lambda_shared, self.lambda_jsd = float(lambda_shared), float(lambda_jsd)
        self.lambda_orth, self.lambda_rank = float(lambda_orth), float(lambda_rank)

    def losses(self, out: FusionOutput, batch) -> dict[str, torch.Tensor]:
        """Every loss term (undivided by its coefficient), as 0-d tensors."""
        y, present, tt = batch["y"], batch["present"], self.task_type
        a, b = self.model.modalities
        paired = present[a] & present[b]
        terms = {"fuse": task_loss(out.fused, y, tt), "shared": task_loss(out.extras["shared_logits"], y, tt)}
        for m in (a, b):
            terms[m] = task_loss(out.unimodal[m], y, tt, present[m])
            cos = F.cosine_similarity(upcast(out.extras[f"shared_{m}"]), upcast(out.features[m]), dim=-1).abs()
            terms[f"orth_{m}"] = (cos * present[m]).sum() / present[m].sum().clamp(min=1)
        jsd = bernoulli_jsd(upcast(out.extras[f"projected_{a}"]), upcast(out.extras[f"projected_{b}"]))
        terms["jsd"] = (jsd * paired).sum() / paired.sum().clamp(min=1)

        with torch.no_grad():
            l_a, l_b = per_label_losses(out.unimodal[a], y, tt), per_label_losses(out.unimodal[b], y, tt)
            l_s = per_label_losses(out.extras["shared_logits"], y, tt)
        alpha = upcast(out.extras["attention"])
        al_a, al_s, al_b = alpha[..., 0], alpha[..., 1], alpha[..., 2]
        pairs = ((al_b, al_a, l_b, l_a), (al_s, al_a, l_s, l_a), (al_s, al_b, l_s, l_b))
        if not is_distributed():
            terms["rank"] = sum(ranking_hinge(*pair, paired) for pair in pairs) / 3
            return terms
        sums, counts = zip(*(hinge_sum_and_count(*pair, paired) for pair in pairs), strict=True)
        counts = torch.stack(counts).to(alpha.dtype)
        all_reduce_sum_([counts])  # positive hinges of the whole batch, per pair
        terms["rank"] = sum(world_size() * h / n.clamp(min=1) for h, n in zip(sums, counts, strict=True)) / 3
        return terms

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        a, b = self.model.modalities
        return (terms["fuse"] + self.lambda_shared * terms["shared"]
                + sum(self.lambdas[m] * terms[m] + self.lambda_orth * terms[f"orth_{m}"] for m in (a, b))
                + self.lambda_jsd * terms["jsd"] + self.lambda_rank * terms["rank"])

    def step(self, batch):
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        out = self.model(batch["inputs"], batch["present"])
        terms = self.losses(out, batch)
        loss = self.total(terms)
        loss.backward()
        self.apply_gradients()
        metrics = {"loss_total": loss.detach(), **{f"loss_{k}": v.detach() for k, v in terms.items()}}
        alpha = out.extras["attention"].detach().float().mean(1)  # [B, 3], mean over labels
        paired = (batch["present"][self.model.modalities[0]] & batch["present"][self.model.modalities[1]])
        weight = paired.to(alpha.dtype).unsqueeze(1)
        names = ("attention_" + self.model.modalities[0], "attention_shared", "attention_" + self.model.modalities[1])
        means = (alpha * weight).sum(0) / weight.sum().clamp(min=1)  # mean attention over paired samples
        metrics.update({name: means[i] for i, name in enumerate(names)})
        return metrics
