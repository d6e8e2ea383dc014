"""One training step of every table row's model gives every trainable parameter a gradient.

DDP (without ``find_unused_parameters``) fails on a parameter that gets no gradient, and such
a parameter is a part the row builds but never uses: a switch that makes a part idle must not
build it. Every implemented row of experiments/*/*.yaml at the smoke preset, one batch of the
smoke synthetic data each; rows with the same model config are checked once.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from rtinst.records import config_hash
from rtinst.data.build import build_dataset, collate_fn
from rtinst.models import build_model
from rtinst.harness.specs import load_specs
from rtinst.harness.table_spec import row_config, trained_row


def _rows(data_root) -> dict[str, tuple[str, object]]:
    """model-config hash -> (first row naming it, its smoke RunConfig)."""
    out: dict[str, tuple[str, object]] = {}
    for spec in load_specs(presets=("smoke",)):
        for row in spec.implemented_rows:
            base = trained_row(spec, row)
            model = base.model or spec.model
            cfg = row_config(spec, base, "smoke", [f"data.root={data_root / model}"])
            key = config_hash(cfg.model)
            out.setdefault(key, (f"{spec.id}: {row.label}", cfg))
    return out


def ungraded_parameters(model: torch.nn.Module, batch) -> list[str]:
    losses = model(batch.images, batch.targets)
    sum(losses.values()).backward()
    return [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]


@pytest.mark.parametrize("model_name", ["fastinst", "sparseinst", "yolact"])
def test_every_table_row_trains_every_parameter(model_name, tmp_path_factory):
    data_root = tmp_path_factory.getbasetemp() / "row_grad_data"
    rows = {k: v for k, v in _rows(data_root).items() if v[1].model.name == model_name}
    assert rows, model_name
    batches, failures = {}, {}
    for label, cfg in rows.values():
        data_key = config_hash(cfg.data)
        if data_key not in batches:
            dataset = build_dataset(cfg.data, "train", progress=False)
            batches[data_key] = collate_fn(cfg.data)([dataset[i] for i in range(2)])
        torch.manual_seed(0)
        model = build_model(cfg.model).train()
        missing = ungraded_parameters(model, batches[data_key])
        if missing:
            failures[label] = missing
    assert not failures, f"parameters without a gradient: {failures}"


def test_the_check_finds_an_unused_part():
    # The check itself: a module built but left out of the loss is reported by name.
    from rtinst.config import load_config

    cfg = load_config("rtinst/configs/fastinst/smoke.yaml")
    model = build_model(cfg.model).train()
    model.unused = torch.nn.Linear(2, 2)
    images = torch.randn(1, 3, 64, 64)
    targets = [{"labels": torch.tensor([1]), "masks": torch.zeros(1, 64, 64, dtype=torch.bool),
                "boxes": torch.tensor([[0.0, 0.0, 8.0, 8.0]])}]
    targets[0]["masks"][0, :8, :8] = True
    batch = SimpleNamespace(images=images, targets=targets)
    assert ungraded_parameters(model, batch) == ["unused.weight", "unused.bias"]
