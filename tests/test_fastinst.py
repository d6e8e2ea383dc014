"""FastInst: every paper switch changes the computation as the paper says; train/eval contract.

Small models (tiny backbone from scratch, hidden 32, 64-128 px inputs) keep this file fast.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rtinst.config import load_config
from rtinst.config_schema import BackboneConfig, FastInstConfig
from rtinst.models import build_model
from rtinst.models.fastinst import FastInst, select_ia_queries
from rtinst.models.fastinst_loss import FastInstCriterion, cell_centres_inside
from rtinst.models.pixel_decoders import (MSDeformAttn, MSDeformAttnPixelDecoder,
                                          TransformerEncoder, build_pixel_decoder)
from rtinst.models.transformer import Attention, DualPathDecoderLayer, sine_position_embedding

CONFIGS = Path(__file__).resolve().parents[1] / "rtinst" / "configs" / "fastinst"
K = 4


def make_cfg(**kw) -> FastInstConfig:
    base = dict(backbone=BackboneConfig(name="tiny", pretrained="none", frozen_bn=False),
                num_classes=K, hidden_dim=32, ffn_dim=64, num_heads=4, num_ia_queries=9,
                num_aux_queries=3, decoder_layers=2, num_points=64, pixel_decoder_layers=1)
    base.update(kw)
    return FastInstConfig(**base)


def make_model(seed: int = 0, **kw) -> FastInst:
    torch.manual_seed(seed)
    return FastInst(make_cfg(**kw))


def make_targets(h: int = 96, w: int = 128) -> list[dict]:
    def target(boxes, labels):
        masks = torch.zeros(len(boxes), h, w, dtype=torch.bool)
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            masks[i, y0:y1, x0:x1] = True
        return {"labels": torch.tensor(labels, dtype=torch.int64), "masks": masks,
                "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)}

    return [target([(8, 8, 60, 50), (70, 30, 120, 90)], [1, 3]), target([], [])]


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, 3, 96, 128)


# ------------------------------------------------------------------------- queries


def test_zero_queries_are_zeros(images):
    model = make_model(query_type="zero").eval()
    levels = dict(zip(("E3", "E4", "E5"), model.pixel_decoder(
        [model.backbone(images)[n] for n in ("res3", "res4", "res5")])))
    init = model.initial_queries(levels)
    assert init["queries"].shape == (2, 9, 32)
    assert torch.count_nonzero(init["queries"]) == 0
    assert init["class_map"] is None and not hasattr(model, "query_proposal")
    learn = make_model(query_type="learnable").initial_queries(levels)
    assert torch.count_nonzero(learn["queries"]) > 0
    resize = make_model(query_type="resize").initial_queries(levels)
    assert resize["queries"].shape == (2, 9, 32)
    assert not torch.equal(resize["queries"][0], resize["queries"][1])  # image-dependent


def test_ia_selection_prefers_8_neighbour_local_maxima():
    # One class plane (K=1) with two peaks; the strongest non-peak (next to the big peak)
    # must rank after the weaker peak.
    logits = torch.full((1, 2, 5, 5), -4.0)
    logits[0, 0, 1, 1] = 4.0  # peak A
    logits[0, 0, 1, 2] = 3.5  # neighbour of A, not a local max
    logits[0, 0, 3, 4] = 2.0  # peak B (weaker than the neighbour)
    idx = select_ia_queries(logits, 3)[0].tolist()
    assert idx[:2] == [1 * 5 + 1, 3 * 5 + 4]
    assert 1 * 5 + 2 not in idx  # the flat background plateau counts as peaks (ties kept)
    order = select_ia_queries(logits, 25)[0].tolist()
    fg = logits.softmax(1)[0, 0]
    peaks = fg >= F.max_pool2d(fg[None, None], 3, 1, 1)[0, 0]
    first_non_peak = min(i for i, p in enumerate(order) if not peaks.flatten()[p])
    assert all(peaks.flatten()[p] for p in order[:first_non_peak])
    assert all(not peaks.flatten()[p] for p in order[first_non_peak:])
    assert order[first_non_peak] == 1 * 5 + 2  # the strongest non-peak leads the non-peaks
    # diagonal neighbours count: a diagonal higher value suppresses a position
    logits = torch.full((1, 2, 3, 3), -4.0)
    logits[0, 0, 0, 0], logits[0, 0, 1, 1] = 1.0, 2.0
    assert select_ia_queries(logits, 1)[0].tolist() == [4]


def test_ia_selection_per_class_planes():
    # Two different classes side by side: both are local maxima of their own class plane.
    logits = torch.full((1, 3, 1, 4), -4.0)
    logits[0, 0, 0, 1] = 3.0
    logits[0, 1, 0, 2] = 2.5
    logits[0, 0, 0, 2] = 2.0  # class 0 is high here too, but position 2's best class is 1
    assert sorted(select_ia_queries(logits, 2)[0].tolist()) == [1, 2]


@pytest.mark.parametrize("source", ["E3", "E4", "E5"])
def test_ia_queries_gathered_from_source_level(images, source):
    model = make_model(query_source=source).eval()
    feats = model.backbone(images)
    e = model.pixel_decoder([feats["res3"], feats["res4"], feats["res5"]])
    levels = dict(zip(("E3", "E4", "E5"), e))
    init = model.initial_queries(levels)
    src = levels[source]
    assert init["class_map"].shape == (2, K + 1, *src.shape[-2:])
    assert init["locations"].max() < src.shape[-2] * src.shape[-1]
    expected = src.flatten(2)[0][:, init["locations"][0]].T
    torch.testing.assert_close(init["queries"][0], expected)
    peaks = select_ia_queries(init["class_map"], 9)
    assert torch.equal(peaks, init["locations"])


def test_aux_queries_never_predict(images):
    model = make_model(num_aux_queries=5).eval()
    out = model(images, None, extras=True)
    for stage in out[0]["layer_predictions"]:
        assert stage["class_logits"].shape == (9, K + 1)
        assert stage["mask_logits"].shape[0] == 9
    assert out[0]["query_kept"].shape == (9,)
    # aux queries are never masked: the attention mask rows of aux queries are all True
    allowed = model._attention_mask(torch.zeros(2, 9, 12, dtype=torch.bool))
    assert allowed.shape == (2, 14, 12) and allowed.all()


def test_decoder_depth_zero_runs_no_layer(images):
    model = make_model(decoder_layers=0).eval()
    assert len(model.layers) == 0 and len(model.heads) == 1
    calls = []
    model.heads[0].register_forward_hook(lambda *a: calls.append(1))
    out = model(images, None, extras=True)
    assert len(out[0]["layer_predictions"]) == 1 and calls == [1]
    losses = make_model(decoder_layers=0).train()(images, make_targets())
    assert not any(k.startswith("loss_gt") for k in losses)
    assert {"loss_ce_0", "loss_mask_0", "loss_dice_0", "loss_proposal"} <= set(losses)


# -------------------------------------------------------------------- positional


@pytest.mark.parametrize("n_a,s", [(100, 10), (50, 7), (10, 3), (9, 3)])
def test_learnable_pos_embedding_initialized(n_a, s):
    model = FastInst(make_cfg(num_ia_queries=n_a))
    grid = model.pos_embedding.grid.weight
    assert grid.shape == (32, s, s)
    assert torch.isfinite(grid).all() and grid.abs().min() > 0 and grid.std() > 0.1
    assert model.pos_embedding.grid(7, 5).shape == (32, 7, 5)


def test_sinusoidal_pos_embedding():
    pos = sine_position_embedding(6, 8, 32)
    assert pos.shape == (32, 6, 8) and torch.isfinite(pos).all()
    assert not torch.equal(pos[:, 0, 0], pos[:, 0, 1])
    assert not torch.equal(pos[:, 0, 0], pos[:, 1, 0])
    model = make_model(pos_embedding="sinusoidal")
    assert not any("pos_embedding" in n for n, _ in model.named_parameters())


# ----------------------------------------------------------------- decoder layer


def test_dual_path_orders_differ():
    torch.manual_seed(0)
    ref = DualPathDecoderLayer(32, 4, 64, "pixel_then_query")
    q, x = torch.randn(2, 6, 32), torch.randn(2, 20, 32)
    qp, xp = torch.randn(2, 6, 32), torch.randn(1, 20, 32)
    outs = {}
    for order in ("pixel_then_query", "query_then_pixel", "pixel_only", "query_only"):
        layer = DualPathDecoderLayer(32, 4, 64, order)
        layer.load_state_dict({k: v for k, v in ref.state_dict().items()
                               if k in layer.state_dict()})
        outs[order] = layer(q, x, qp, xp)
    assert not torch.allclose(outs["pixel_then_query"][0], outs["query_then_pixel"][0])
    assert not torch.allclose(outs["pixel_then_query"][1], outs["query_then_pixel"][1])
    assert torch.equal(outs["pixel_only"][0], q)  # queries untouched
    assert torch.equal(outs["query_only"][1], x)  # pixels untouched
    # pixel-then-query's pixel update equals pixel-only's; query-then-pixel's query
    # update equals query-only's
    torch.testing.assert_close(outs["pixel_then_query"][1], outs["pixel_only"][1])
    torch.testing.assert_close(outs["query_then_pixel"][0], outs["query_only"][0])
    assert not hasattr(DualPathDecoderLayer(32, 4, 64, "pixel_only"), "query_cross_attn")
    assert not hasattr(DualPathDecoderLayer(32, 4, 64, "query_only"), "pixel_ffn")


def test_masked_attention_ignores_masked_pixels():
    torch.manual_seed(0)
    attn = Attention(16, 2)
    q, kv = torch.randn(1, 3, 16), torch.randn(1, 10, 16)
    allowed = torch.zeros(1, 3, 10, dtype=torch.bool)
    allowed[:, :, :4] = True
    out = attn(q, kv, kv, allowed)
    kv2 = kv.clone()
    kv2[:, 4:] = torch.randn(1, 6, 16)
    torch.testing.assert_close(attn(q, kv2, kv2, allowed), out)
    assert not torch.allclose(attn(q, kv2, kv2), attn(q, kv, kv))


def test_masked_attention_uses_previous_stage_masks(images):
    model = make_model().eval()
    seen = []
    model.layers[1].register_forward_pre_hook(lambda m, args: seen.append(args[4]))
    stages = []
    model.heads[1].register_forward_hook(lambda m, a, out: stages.append(out["mask_logits"]))
    model(images, None)
    expected = model._attention_mask(stages[0].flatten(2) >= 0)
    assert torch.equal(seen[0], expected)


# ---------------------------------------------------------------- pixel decoders


def test_pixel_decoder_variants_build_different_modules():
    chans, feats = [16, 24, 32], [torch.randn(1, c, 16 // s, 16 // s)
                                  for c, s in zip([16, 24, 32], [1, 2, 4])]
    kinds = {}
    for kind in ("fpn", "ppm_fpn", "transformer_encoder", "msdeformattn"):
        dec = build_pixel_decoder(kind, chans, 32, 4, 64, 2)
        outs = dec(feats)
        assert [tuple(o.shape) for o in outs] == [(1, 32, 16, 16), (1, 32, 8, 8), (1, 32, 4, 4)]
        kinds[kind] = {type(m).__name__ for m in dec.modules()}
    assert "PPM" in kinds["ppm_fpn"] and "PPM" not in kinds["fpn"]
    assert "TransformerEncoder" in kinds["transformer_encoder"]
    assert "MSDeformAttn" in kinds["msdeformattn"] and "FPN" not in kinds["msdeformattn"]
    assert len(build_pixel_decoder("msdeformattn", chans, 32, 4, 64, 6).layers) == 6
    assert len(build_pixel_decoder("transformer_encoder", chans, 32, 4, 64, 6).top.layers) == 6


def test_msdeformattn_samples_at_reference_points():
    # Zero offsets and uniform weights: each query averages the value at its reference
    # point over levels; with pixel-centre references on a single level that is the value
    # itself (bilinear sampling at pixel centres is exact).
    torch.manual_seed(0)
    attn = MSDeformAttn(8, heads=2, levels=1, points=3)
    torch.nn.init.zeros_(attn.sampling_offsets.bias)
    for lin in (attn.value_proj, attn.output_proj):
        torch.nn.init.eye_(lin.weight)
        torch.nn.init.zeros_(lin.bias)
    h, w = 3, 5
    value = torch.randn(1, h * w, 8)
    ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
    ref = torch.stack([xs.flatten(), ys.flatten()], -1)
    out = attn(torch.randn(1, h * w, 8), ref, value, [(h, w)])
    torch.testing.assert_close(out, value)


def test_msdeformattn_pixel_decoder_in_model(images):
    model = make_model(pixel_decoder="msdeformattn").eval()
    assert isinstance(model.pixel_decoder, MSDeformAttnPixelDecoder)
    out = model(images, None)
    assert torch.isfinite(out[0]["scores"]).all()
    assert isinstance(make_model(pixel_decoder="transformer_encoder").pixel_decoder.top,
                      TransformerEncoder)


# ------------------------------------------------------------------------ losses


def test_training_losses_finite_and_backward(images):
    model = make_model().train()
    losses = model(images, make_targets())
    assert all(k.startswith("loss_") and v.dim() == 0 for k, v in losses.items())
    assert all(torch.isfinite(v) for v in losses.values())
    stages = {f"loss_{n}_{s}" for n in ("ce", "mask", "dice") for s in range(3)}
    assert stages <= set(losses) and "loss_proposal" in losses
    sum(losses.values()).backward()
    for name in ("query_proposal.conv.weight", "layers.0.query_cross_attn.q_proj.weight",
                 "heads.0.class_mlp.layers.0.weight", "pos_embedding.grid.weight",
                 "aux_feat.weight", "backbone.res3.conv1.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_gt_mask_guidance_training_only(images):
    on, off = make_model(gt_mask_guidance=True), make_model(gt_mask_guidance=False)
    off.load_state_dict(on.state_dict())
    torch.manual_seed(0)
    losses_on = on.train()(images, make_targets())
    torch.manual_seed(0)
    losses_off = off.train()(images, make_targets())
    gt_keys = {k for k in losses_on if k.startswith("loss_gt_")}
    assert gt_keys == {f"loss_gt_{n}_{s}" for n in ("ce", "mask", "dice") for s in (1, 2)}
    assert not any(k.startswith("loss_gt_") for k in losses_off)
    for k in losses_off:  # the ordinary losses are untouched by the guidance pass
        torch.testing.assert_close(losses_on[k], losses_off[k])
    out_on, out_off = on.eval()(images, None), off.eval()(images, None)
    for a, b in zip(out_on, out_off):
        assert all(torch.equal(a[k], b[k]) for k in ("scores", "labels", "mask_probs"))


def test_gt_guided_attention_masks_follow_matched_gt():
    model = make_model()
    targets = make_targets()
    q = torch.tensor([4])
    allowed = model._gt_attention_mask([(q, torch.tensor([1])), (q[:0], q[:0])], targets,
                                       (12, 16), 2)
    assert allowed.shape == (2, 12, 12 * 16)
    gt = F.adaptive_avg_pool2d(targets[0]["masks"][1][None, None].float(), (12, 16)) >= 0.5
    assert torch.equal(allowed[0, 4], gt.flatten())
    assert allowed[0, :4].all() and allowed[0, 5:].all() and allowed[1].all()


def test_matcher_location_cost_keeps_queries_inside():
    cfg = make_cfg(num_points=32)
    crit = FastInstCriterion(cfg)
    masks = torch.zeros(1, 32, 32, dtype=torch.bool)
    masks[0, :16, :16] = True  # top-left quarter
    targets = [{"labels": torch.tensor([2]), "masks": masks}]
    # query 0: confident, right class, good mask, but located outside; query 1: inside
    logits = torch.full((1, 2, K + 1), -5.0)
    logits[0, 0, 2] = 5.0
    mask_logits = torch.full((1, 2, 4, 4), -5.0)
    mask_logits[0, 0, :2, :2] = 5.0
    stage = {"class_logits": logits, "mask_logits": mask_logits}
    locations = torch.tensor([[15, 0]])  # on a 4x4 source grid: (3, 3) outside, (0, 0) inside
    inside = cell_centres_inside(masks, (4, 4))
    assert inside[0, 0] and not inside[0, 15]
    (qi, ti), = crit.match(stage, targets, locations, (4, 4))
    assert qi.tolist() == [1]
    (qi, ti), = crit.match(stage, targets, None, None)
    assert qi.tolist() == [0]


@pytest.mark.parametrize("matching,location", [(True, False), (False, True)])
def test_ia_loss_switches(images, matching, location):
    model = make_model(ia_loss_matching=matching, ia_loss_location_cost=location,
                       decoder_layers=1).train()
    losses = model(images, make_targets())
    assert torch.isfinite(losses["loss_proposal"])
    crit = model.criterion
    class_map = torch.zeros(1, K + 1, 6, 8)
    target = make_targets()[:1]
    if not matching:  # semantic targets: every position inside a GT gets its class
        class_map[0, 1] = 10.0
        loss_right = crit.proposal_loss(class_map, target)
        assert loss_right > 0
    else:
        assert crit.proposal_loss(class_map, target) > 0


def test_non_ia_queries_have_no_proposal_loss(images):
    losses = make_model(query_type="learnable", decoder_layers=1).train()(images, make_targets())
    assert "loss_proposal" not in losses and all(torch.isfinite(v) for v in losses.values())


# --------------------------------------------------------------------- inference


def test_eval_output_contract_and_extras(images):
    model = make_model(max_detections=20).eval()
    out = model(images, None)
    assert len(out) == 2
    for o in out:
        assert o["scores"].shape == (20,) and o["labels"].shape == (20,)
        assert o["labels"].dtype == torch.int64 and o["labels"].max() < K
        assert o["mask_probs"].shape == (20, 12, 16)
        assert (o["mask_probs"] >= 0).all() and (o["mask_probs"] <= 1).all()
        assert (o["scores"] >= 0).all() and (o["scores"] <= 1).all()
        assert set(o) == {"scores", "labels", "mask_probs"}
    ext = model(images, None, extras=True)[0]
    assert ext["query_locations"].shape == (9, 2)
    assert (ext["query_locations"][:, 0] < 128).all() and (ext["query_locations"][:, 1] < 96).all()
    assert ext["query_kept"].dtype == torch.bool and ext["query_kept"].any()
    assert ext["class_map"].shape == (K + 1, 6, 8)
    torch.testing.assert_close(ext["class_map"].sum(0), torch.ones(6, 8))
    assert len(ext["layer_predictions"]) == 3


def test_inference_is_topk_over_queries_and_classes():
    model = make_model(max_detections=5).eval()
    logits = torch.randn(1, 9, K + 1)
    masks = torch.randn(1, 9, 4, 4) * 4
    out = model.inference({"stages": [{"class_logits": logits, "mask_logits": masks}],
                           "class_map": None}, (32, 32))[0]
    probs = logits.softmax(-1)[0, :, :K]
    top = probs.flatten().topk(5)
    query = top.indices // K
    assert torch.equal(out["labels"], top.indices % K)
    full = F.interpolate(masks[0, query][None], size=(32, 32), mode="bilinear")[0].sigmoid()
    binary = (full > 0.5).float()
    mask_score = (full * binary).sum((1, 2)) / (binary.sum((1, 2)) + 1e-6)
    torch.testing.assert_close(out["scores"], top.values * mask_score)
    torch.testing.assert_close(out["mask_probs"], masks[0, query].sigmoid())


# ------------------------------------------------------------------- presets


def test_config_presets_load_and_build():
    coco = load_config(CONFIGS / "coco.yaml")
    assert coco.preset == "coco" and coco.model.name == "fastinst"
    m = coco.model
    assert (m.decoder_layers, m.num_ia_queries, m.num_aux_queries) == (3, 100, 8)
    tiny = load_config(CONFIGS / "tiny.yaml")
    assert tiny.preset == "tiny" and tiny.model.backbone.name == "tiny"
    smoke = load_config(CONFIGS / "smoke.yaml", ["model.backbone.pretrained=none"])
    assert smoke.preset == "smoke"
    model = build_model(smoke.model)
    assert isinstance(model, FastInst)


def test_smoke_model_overfits_a_fixed_batch():
    smoke = load_config(CONFIGS / "smoke.yaml", ["model.backbone.pretrained=none"])
    torch.manual_seed(0)
    model = build_model(smoke.model).train()
    images = torch.randn(2, 3, 64, 96)
    targets = make_targets(64, 96)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    totals = []
    for _ in range(12):
        torch.manual_seed(0)  # same sampled points every step
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        totals.append(loss.item())
    assert math.isfinite(totals[-1]) and totals[-1] < 0.8 * totals[0], totals
