"""One sentence per training method, with its reference, for the report's reader.

Keyed by the method registry name (the `--method` of `clinfuse train`). Variants
and ablations (`masam_reference`, `masam_no_aps`, ...) fall back to the longest
known prefix and add the suffix; an unknown name gets a generic sentence.
"""

from __future__ import annotations

MASAM = ("Modality-Aware Sharpness-Aware Minimization: each step finds the dominant modality from its "
         "loss decay and gradient alignment and applies a SAM perturbation to that encoder only")

NOTES: dict[str, tuple[str, str]] = {
    "late_fusion": ("Concatenated encoder features with a linear fusion head, trained on the fused loss plus "
                    "one auxiliary loss per modality; no re-balancing (the reference point).",
                    "Baltrusaitis et al., Multimodal machine learning: a survey and taxonomy, IEEE TPAMI 2019"),
    "unimodal": ("One modality's encoder and head trained alone; shows what a single modality achieves.",
                 "standard single-modality baseline"),
    "sam": ("Sharpness-Aware Minimization on every parameter: gradient taken at a point perturbed towards "
            "higher loss, to prefer flat minima.",
            "Foret et al., Sharpness-Aware Minimization for efficiently improving generalization, ICLR 2021"),
    "masam": (MASAM + ".", "MASAM: Modality-Aware SAM for multimodal learning (paper Eqs. 8-13)"),
    "masam_reference": (MASAM + ", as the authors' released code does it (per-tensor cosines and projection).",
                        "MASAM released code (Orange2107/MASAM-Multimodal-Adaptive-SAM)"),
    "masam_no_aps": (MASAM + "; ablation without the dominance score: every modality is perturbed.",
                     "MASAM paper, Table 2 ablation"),
    "masam_no_mdps": (MASAM + "; ablation with the gradient-alignment scaling replaced by 1.",
                      "MASAM paper, Table 2 ablation"),
    "igm": ("Flat gradient modification: each modality's gradient is projected to damp directions that "
            "dominate the shared features, combined with SAM; predictions average the unimodal heads.",
            "IGM, IJCAI 2025 (njustkmg/IJCAI25-IGM)"),
    "ogm_ge": ("On-the-fly gradient modulation: the encoder of the modality that is ahead gets its gradient "
               "scaled down, plus Gaussian noise for generalisation enhancement.",
               "Peng et al., Balanced multimodal learning via on-the-fly gradient modulation, CVPR 2022"),
    "agm": ("Adaptive gradient modulation: Shapley-style unimodal contributions set per-modality gradient "
            "scales that pull the modalities' learning rates together.",
            "Li et al., Boosting multi-modal model performance with adaptive gradient modulation, ICCV 2023"),
    "gblend": ("Gradient blending: per-modality loss weights from each branch's overfitting-to-generalisation "
               "ratio, re-estimated on held-out data.",
               "Wang et al., What makes training multi-modal classification networks hard?, CVPR 2020"),
    "pmr": ("Prototypical modal rebalance: a prototype-distance loss accelerates the slower modality's "
            "encoder (single-label tasks only).",
            "Fan et al., PMR: prototypical modal rebalance for multimodal learning, CVPR 2023"),
    "inforeg": ("Information-aware regularisation: during the prime learning window the ahead modality's "
                "encoder is pulled towards its epoch-start weights.",
                "Huang et al., Adaptive unimodal regulation for balanced multimodal information acquisition, "
                "CVPR 2025"),
    "mla": ("Multimodal learning with alternating unimodal adaptation: modalities are trained in turn through "
            "a shared head with gradient projection; predictions combine unimodal outputs.",
            "Zhang et al., Multimodal representation learning by alternating unimodal adaptation, CVPR 2024"),
    "mmpareto": ("Pareto integration of the fused and unimodal gradients, so that no objective's gradient "
                 "conflicts with the update.",
                 "Wei & Hu, MMPareto: boosting multimodal learning with innocent unimodal assistance, ICML 2024"),
    "aug": ("Adaptive unimodal guidance: unimodal predictions steer the weaker modality's learning; "
            "predictions combine unimodal outputs.",
            "AUG, NeurIPS 2025 (njustkmg/NeurIPS25-AUG)"),
    "medfuse": ("LSTM-based fusion of EHR and chest X-ray features that tolerates a missing image.",
                "Hayat et al., MedFuse: multi-modal fusion with clinical time-series data and chest X-ray "
                "images, MLHC 2022"),
    "drfuse": ("Disentangled shared and modality-specific representations with disease-wise attention "
               "fusion; robust to a missing modality.",
               "Yao et al., DrFuse: learning disentangled representation for clinical multi-modal fusion "
               "with missing modality and modal inconsistency, AAAI 2024"),
}


def method_note(name: str) -> dict[str, str]:
    """{"method", "description", "reference"} for a method registry name; never raises."""
    if name in NOTES:
        description, reference = NOTES[name]
        return {"method": name, "description": description, "reference": reference}
    prefixes = sorted((k for k in NOTES if name.startswith(k + "_")), key=len, reverse=True)
    if prefixes:
        base = prefixes[0]
        description, reference = NOTES[base]
        variant = name[len(base) + 1:].replace("_", " ")
        return {"method": name, "description": f"{description.rstrip('.')} (variant or ablation: {variant}).",
                "reference": reference}
    return {"method": name, "description": "A training method of this project without a registered description; "
                                           "see its module in models/methods/ and its YAML in configs/methods/.",
            "reference": "—"}
