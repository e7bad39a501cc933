"""Predict with a registered model on a processed cohort.

  clinfuse predict --model models:/mimic-phenotype@champion --cohort data/processed/mimic-phenotype \
                   --out predictions.parquet [--split test] [--explain]

The model card stored with the version (metadata.json) says which inputs, in which
order and shape, the model expects; a cohort that does not match is refused, and so is a
sample the model cannot score faithfully (pipeline.serving.check_inputs: NaN or infinite
values, presence flags other than 0/1, no modality present, a modality missing that the
model never saw missing in training), naming the sample; nothing is written then.
Predicting only reads the tracking store: it creates no experiment and no run.
`--explain` adds, next to each `prob__<label>`, every modality's exact Shapley contribution to
that probability (`contribution__<modality>__<label>`; they add up to the probability minus the
probability with every modality absent).
"""

from __future__ import annotations

from pathlib import Path

NAME = "predict"
HELP = "predict with a registered model (models:/<name>@champion) on a processed cohort"


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="model URI, e.g. models:/mimic-phenotype@champion")
    parser.add_argument("--cohort", required=True, help="processed cohort folder")
    parser.add_argument("--out", required=True, help="output Parquet file (one row per sample)")
    parser.add_argument("--split", choices=["all", "train", "val", "test"], default="all")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--explain", action="store_true",
                        help="also write each modality's Shapley contribution to each label's probability "
                             "(columns contribution__<modality>__<label>, probability scale)")


def run(args) -> int:
    import numpy as np
    import pandas as pd

    from clinfuse.etl.atomic import write_parquet
    from clinfuse.etl.errors import InputError
    from clinfuse.pipeline.data import load_cohort, split_tensors
    from clinfuse.pipeline.registry import download_registered_model
    from clinfuse.pipeline.serving import explain_columns
    from clinfuse.pipeline.tracking import check_store, connect, store_errors

    check_store(connect(), write=False)  # read-only: no experiment or run is created in the store
    import mlflow
    import torch

    from clinfuse.etl.atomic import check_writable
    from clinfuse.pipeline.serving import absent_refused, check_inputs

    if args.batch_size < 1:
        raise InputError(f"--batch-size must be a positive number of samples, got {args.batch_size}")
    if Path(args.out).is_dir():
        raise InputError(f"--out {args.out}: is a folder; expected the Parquet file to write")
    check_writable(Path(args.out).parent)
    with store_errors(what="reading the model"):
        local, card = download_registered_model(args.model)
    cohort = load_cohort(args.cohort)
    fmt = card["network_data_format"]
    # Shapes can agree across tasks (phenotype and mortality share the EHR/CXR inputs): check what is predicted.
    model_labels = [fmt["outputs"]["probabilities"]["channel_def"][str(k)]
                    for k in range(len(fmt["outputs"]["probabilities"]["channel_def"]))]
    for what, theirs, ours in (("dataset", card.get("dataset"), cohort.manifest.dataset),
                               ("task", card.get("task"), cohort.manifest.task),
                               ("task type", card.get("task_type"), cohort.task_type)):
        if theirs is not None and theirs != ours:
            raise InputError(f"{args.cohort}: cohort {what} is {ours!r} but {args.model} was trained for {theirs!r}")
    if model_labels != cohort.label_names:
        raise InputError(f"{args.cohort}: cohort labels {cohort.label_names[:3]}... differ from the model's "
                         f"{model_labels[:3]}... ({len(cohort.label_names)} vs {len(model_labels)} outputs)")
    model = mlflow.pytorch.load_model(str(local))
    order = fmt["argument_order"]
    modalities = [n for n in order if not n.startswith("has_")]
    if modalities != cohort.modalities:
        raise InputError(f"{args.cohort}: cohort modalities {cohort.modalities} do not match the model's {modalities}")
    for m in modalities:
        want = fmt["inputs"][m]["shape"][1:]
        got = list(cohort.input_shape(m))
        if want != got:
            raise InputError(f"{args.cohort}: modality '{m}' has per-sample shape {got}; the model expects {want}")
    labels = model_labels
    refused = absent_refused(card)
    splits = ["train", "val", "test"] if args.split == "all" else [args.split]
    frames = []
    for split in splits:
        t = split_tensors(cohort, split)
        s = cohort.samples.iloc[t.rows].reset_index(drop=True)
        ids = [c for c in cohort.manifest.id_columns if c in s.columns] + ["split"]

        def sample(i: int, s=s, ids=ids, t=t) -> str:
            named = ", ".join(f"{c} {s[c].iloc[i]}" for c in ids if c != "split")
            return f"samples.parquet row {int(t.rows[i])} ({named})"

        probs, contributions = [], []
        with torch.no_grad():
            for start in range(0, len(t), args.batch_size):
                b = t.batch(torch.arange(start, min(start + args.batch_size, len(t))))
                tensors = [b["inputs"][m] for m in modalities] + [b["present"][m].float() for m in modalities]
                try:
                    check_inputs(dict(zip(order, [x.numpy() for x in tensors], strict=True)), refused, start, sample)
                except ValueError as exc:
                    raise InputError(f"{args.cohort}: {exc}; nothing written") from None
                batch_probs = model(*tensors).numpy()
                if not np.isfinite(batch_probs).all():
                    i = start + int(np.argmin(np.isfinite(batch_probs).all(axis=1)))
                    raise InputError(f"{args.cohort}: {sample(i)}: the model's probabilities are not finite "
                                     "(inputs far outside the training range?); nothing written")
                probs.append(batch_probs)
                if args.explain:
                    contributions.append(explain_columns(model, order, tensors, labels))
        p = np.concatenate(probs) if probs else np.zeros((0, len(labels)), np.float32)
        frame = s[ids].copy()
        for k, name in enumerate(labels):
            frame[f"prob__{name}"] = p[:, k]
        if args.explain:
            columns = [f"contribution__{m}__{name}" for m in modalities for name in labels]
            extra = pd.concat(contributions, ignore_index=True) if contributions else pd.DataFrame(columns=columns)
            frame = pd.concat([frame, extra[columns].astype(np.float32)], axis=1)
        frames.append(frame)
    out = pd.concat(frames, ignore_index=True)
    write_parquet(Path(args.out), out)
    print(f"predict: {len(out)} samples of {cohort.name} with {args.model} ({card.get('training', {}).get('method')}) "
          f"-> {args.out}")
    return 0
