"""`rtinst pretrain` on a tiny split: weights + card written, loadable by the tiny backbone."""

import hashlib
import json

import pytest
import torch

from rtinst.config_schema import BackboneConfig
from rtinst.data.coco import CocoInstanceDataset
from rtinst.diagnostics.pretrain import (CropScale, CropSource, ObjectHeads, ObjectMasks, PretrainConfig,
                                   object_step_inputs, pretrain)
from rtinst.errors import UserError
from rtinst.models.backbones import build_backbone


def _train_split(cfg: PretrainConfig) -> CocoInstanceDataset:
    return CocoInstanceDataset(f"{cfg.data_root}/annotations/instances_train.json",
                               f"{cfg.data_root}/train", training=True)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pretrain")
    cfg = PretrainConfig(data_root=str(tmp / "pre"), num_images=8, holdout_images=2, size=96,
                         scales=(CropScale(32, (1.2, 3.0), 4), CropScale(48, (1.1, 2.0), 2)),
                         iters=3, warmup_iters=1, eval_period=2)
    out = tmp / "tiny.pt"
    return cfg, out, pretrain(cfg, out, progress=False)


def test_pretrain_writes_loadable_weights_and_card(pretrained):
    cfg, out, card = pretrained
    assert card["iterations"] == 3 and card["train_images"] == 6 and card["held_out_images"] == 2
    assert [h["iter"] for h in card["history"]] == [2, 3]
    assert 0.0 <= card["held_out_accuracy"] <= 1.0 and card["held_out_objects"] > 0
    by_crop = card["held_out_accuracy_by_crop"]
    assert set(by_crop) == {"32", "48"}
    assert card["held_out_accuracy"] == pytest.approx(sum(by_crop.values()) / 2, abs=1e-4)
    assert card["init"] is None
    assert card["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert json.loads(out.with_suffix(".json").read_text())["config"]["seed"] == 1000
    net = build_backbone(BackboneConfig(name="tiny", pretrained=str(out)))
    assert net.init_source == str(out)
    saved = torch.load(out, weights_only=True)
    torch.testing.assert_close(net.res3.conv1.weight, saved["res3.conv1.weight"])


def test_pretrain_refuses_a_split_made_with_other_settings(pretrained):
    cfg, out, _ = pretrained
    cfg = PretrainConfig(**{**cfg.__dict__, "seed": 7})
    with pytest.raises(UserError, match="generation.json: split has 8 images from seed 1000"):
        pretrain(cfg, out.with_name("other.pt"), progress=False)
    assert not out.with_name("other.pt").exists()


def test_crops_centre_the_object_and_carry_its_label(pretrained):
    cfg, _, _ = pretrained
    ds = _train_split(cfg)
    source = CropSource(ds, range(len(ds)), cfg.size)
    # replace image 0 by a white square on black, object 0 by that square
    source.images[0] = 0
    source.images[0, :, 40:60, 30:50] = 255
    source.objects[0] = torch.tensor([0, 40.0, 50.0, 20.0, 3])
    x, labels = source.crops(torch.tensor([0]), 32, context=2.0)
    assert x.shape == (1, 3, 32, 32) and labels.tolist() == [3]
    white = x[0, 0] > 0  # normalized: white > 0 > black
    # the 20 px square in a 40 px window fills the central half of the crop
    assert white[8:24, 8:24].all() and not white[:6].any() and not white[:, 26:].any()
    # random context / shift / flip: crops differ between draws but keep the label
    g = torch.Generator().manual_seed(0)
    a, la = source.crops(torch.tensor([0, 0]), 32, (1.2, 3.0), g)
    assert la.tolist() == [3, 3] and not torch.equal(a[0], a[1])


def test_second_stage_starts_from_init_and_records_it(pretrained, tmp_path):
    cfg, out, card = pretrained
    # lr 0: AdamW changes nothing, so the stage's conv weights are exactly the init's
    stage2 = PretrainConfig(**{**cfg.__dict__, "init": str(out), "lr": 0.0, "iters": 1, "eval_period": 1})
    card2 = pretrain(stage2, tmp_path / "stage2.pt", progress=False)
    assert card2["init"]["sha256"] == card["sha256"]
    first_card = json.loads(out.with_suffix(".json").read_text())
    assert card2["init"]["card"]["config"] == first_card["config"]  # the first recipe travels along
    first, second = torch.load(out, weights_only=True), torch.load(tmp_path / "stage2.pt", weights_only=True)
    torch.testing.assert_close(second["res5.conv2.weight"], first["res5.conv2.weight"])
    torch.save({"head.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match=r"other.pt: does not fit the tiny backbone: .* 1 unexpected \(head.weight\)"):
        pretrain(PretrainConfig(**{**stage2.__dict__, "init": str(tmp_path / "other.pt")}),
                 tmp_path / "x.pt", progress=False)
    with pytest.raises(UserError, match="missing.pt: init weights file not found"):
        pretrain(PretrainConfig(**{**stage2.__dict__, "init": str(tmp_path / "missing.pt")}),
                 tmp_path / "x.pt", progress=False)


def test_scale_parsing_and_bad_scales():
    assert CropScale.parse("112:1.1:2.0:24") == CropScale(112, (1.1, 2.0), 24)
    with pytest.raises(UserError, match=r"--scale '64:1.2': expected CROP:CONTEXT_LOW:CONTEXT_HIGH:BATCH"):
        CropScale.parse("64:1.2")
    with pytest.raises(UserError, match="scale 64:3.0:1.2:8: need"):
        pretrain(PretrainConfig(scales=(CropScale(64, (3.0, 1.2), 8),)), "unused.pt", progress=False)


def test_object_masks_follow_the_annotations_and_pad_with_ignored_labels(pretrained):
    cfg, _, _ = pretrained
    ds = _train_split(cfg)
    objects = ObjectMasks(ds, range(len(ds)), cfg.size)
    target = ds.load_target(ds.ids[1])
    rows = objects.rows[1]
    assert len(rows) > 0 and objects.masks.shape[1:] == (cfg.size // 4, cfg.size // 4)
    # cover = fraction of each 4x4 cell inside the mask: its sum x 16 is the mask area
    first = objects.masks[rows[0]].float() / 255 * 16
    assert first.sum().item() == pytest.approx(target["masks"][0].sum().item(), rel=0.02)
    assert objects.labels[rows].tolist() == target["labels"][:len(rows)].tolist()
    cover, labels = objects.batch(torch.tensor([0, 1]))
    most = max(len(objects.rows[0]), len(objects.rows[1]))
    assert cover.shape == (2, most, cfg.size // 4, cfg.size // 4) and labels.shape == (2, most)
    short = 0 if len(objects.rows[0]) < most else 1
    assert (labels[short, len(objects.rows[short]):] == -100).all()
    assert cover[short, len(objects.rows[short]):].sum() == 0


def test_object_heads_pool_each_object_inside_its_mask():
    heads = ObjectHeads({"res4": 2}, num_classes=2)
    with torch.no_grad():
        heads.heads["res4"].weight.copy_(torch.eye(2))
        heads.heads["res4"].bias.zero_()
    fmap = torch.zeros(1, 2, 4, 4)
    fmap[0, 0, :2] = 1.0   # channel 0 on in the top half
    fmap[0, 1, 2:] = 3.0   # channel 1 on in the bottom half
    cover = torch.zeros(1, 2, 8, 8)
    cover[0, 0, :4] = 1.0  # object 0: top half
    cover[0, 1, 4:, :4] = 1.0  # object 1: bottom-left quarter
    logits = heads({"res4": fmap}, cover)["res4"]
    torch.testing.assert_close(logits[0], torch.tensor([[1.0, 0.0], [0.0, 3.0]]))


def test_object_steps_train_level_heads_and_report_full_image_accuracy(pretrained, tmp_path):
    cfg, out, _ = pretrained
    stage3 = PretrainConfig(**{**cfg.__dict__, "init": str(out), "object_steps": 2, "object_batch": 2,
                               "iters": 4, "eval_period": 4})
    card = pretrain(stage3, tmp_path / "stage3.pt", progress=False)
    acc = card["held_out_object_accuracy"]
    assert set(acc) == {"res3", "res4", "res5"} and all(0.0 <= v <= 1.0 for v in acc.values())
    assert "full images" in card["what"]
    ds = _train_split(cfg)
    source, objects = CropSource(ds, range(2), cfg.size), ObjectMasks(ds, range(2), cfg.size)
    x, cover, _ = object_step_inputs(source, objects, torch.tensor([0, 1]), (2.0, 2.0),
                                     torch.Generator().manual_seed(0))
    assert x.shape[-1] == 2 * cfg.size and cover.shape[-1] == cfg.size // 4  # masks pool to any size
    with pytest.raises(UserError, match="object steps -1"):
        pretrain(PretrainConfig(**{**stage3.__dict__, "object_steps": -1}), tmp_path / "x.pt", progress=False)
