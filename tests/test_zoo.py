"""Checkpoints and the model zoo: safe loading, checksums, cards that verify."""

import hashlib
import json
import os
import pickle
import shutil

import pytest
import torch
import yaml

from segbench.errors import UserError
from segbench.models import factory
from segbench.models.checkpoints import download, load_weights, read_state_dict, save_checkpoint, sha256_file
from segbench.zoo.cards import cards, read_card

TINY = ["train.iters=3", "train.batch_size=4", "data.image_size=32", "data.train_samples=8",
        "data.val_samples=8", "eval.batch_size=4", "bench.enabled=false", "progress=false"]


def outputs(model, size=32):
    torch.manual_seed(1)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        return model.eval()(x)


def test_safetensors_round_trip(tmp_path):
    model = factory.build("pspnet-resnet10t", 3, "random").module
    save_checkpoint(model, tmp_path / "ckpt", {"model": "pspnet-resnet10t"})
    meta = json.loads((tmp_path / "ckpt" / "segbench.json").read_text())
    assert meta["sha256"] == sha256_file(tmp_path / "ckpt" / "model.safetensors")
    fresh = factory.build("pspnet-resnet10t", 3, "random").module
    load_weights(fresh, tmp_path / "ckpt", sha256=meta["sha256"])
    assert torch.equal(outputs(model), outputs(fresh))


def test_tampered_checkpoint_is_refused_naming_both_sums(tmp_path):
    model = factory.build("pspnet-resnet10t", 3, "random").module
    weights = save_checkpoint(model, tmp_path / "ckpt", {})
    good = sha256_file(weights)
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    bad = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(UserError, match=f"expected sha256 {good}, got {bad}"):
        load_weights(factory.build("pspnet-resnet10t", 3, "random").module, weights, sha256=good)


class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/segbench-pwned",))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"weight": RunsCode()}, f)
    if os.path.exists("/tmp/segbench-pwned"):
        os.remove("/tmp/segbench-pwned")
    with pytest.raises(UserError, match="refusing to load"):
        read_state_dict(path)
    assert not os.path.exists("/tmp/segbench-pwned")


def test_plain_state_dict_and_smp_save_pretrained_load(tmp_path):
    model = factory.build("unet-resnet10t", 2, "random").module
    torch.save(model.state_dict(), tmp_path / "plain.pth")
    fresh = factory.build("unet-resnet10t", 2, "random").module
    load_weights(fresh, tmp_path / "plain.pth")
    assert torch.equal(outputs(model), outputs(fresh))

    model.save_pretrained(str(tmp_path / "smp"))  # segmentation-models-pytorch's own format
    fresh = factory.build("unet-resnet10t", 2, "random").module
    load_weights(fresh, tmp_path / "smp")
    assert torch.equal(outputs(model), outputs(fresh))


def test_a_checkpoint_for_another_model_is_refused(tmp_path):
    save_checkpoint(factory.build("pspnet-resnet10t", 3, "random").module, tmp_path / "ckpt", {})
    with pytest.raises(UserError, match="does not fit the model"):
        load_weights(factory.build("fpn-resnet10t", 3, "random").module, tmp_path / "ckpt")


def test_download_checks_the_sum_and_caches(tmp_path):
    source = tmp_path / "remote.safetensors"
    source.write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").hexdigest()
    cached = download(source.as_uri(), digest, tmp_path / "cache")
    assert cached.read_bytes() == b"weights"
    with pytest.raises(UserError, match="checksum mismatch"):
        download(source.as_uri(), "0" * 64, tmp_path / "cache2")
    assert not list((tmp_path / "cache2" / "weights").iterdir())  # nothing half-downloaded is kept


def test_card_from_a_training_run_verifies_to_1e_6(cli, tmp_path):
    run_dir = tmp_path / "run"
    code, _, err = cli("run", "models=[pspnet-resnet10t]", *TINY, "tracking.enabled=false",
                       f"output_dir={run_dir}")
    assert code == 0, err
    zoo = tmp_path / "zoo"
    code, out, err = cli("zoo", "add", str(run_dir), "--name", "tiny", "--zoo-dir", str(zoo))
    assert code == 0, err
    card = read_card(zoo / "tiny.yaml")
    trained = json.loads((run_dir / "results.json").read_text())["models"][0]
    assert card.results["metrics"]["mIoU"] == trained["metrics"]["mIoU"]
    assert card.weights.sha256 == sha256_file(zoo / "weights" / "tiny.safetensors")

    from segbench.pipeline.runner import run as run_suite
    from segbench.zoo.verify import compare, eval_config

    cfg = eval_config(card, [f"output_dir={tmp_path / 'eval'}", "tracking.enabled=false", "progress=false"])
    assert not cfg.train.enabled
    record = json.loads(run_suite(cfg).read_text())["models"][0]
    assert compare(card, record["metrics"]) == []
    assert abs(record["metrics"]["mIoU"] - trained["metrics"]["mIoU"]) <= 1e-6

    # a card whose reported number is off fails verification
    data = yaml.safe_load((zoo / "tiny.yaml").read_text())
    assert data["schema_version"] == 2 and "verified" in data and "results" not in data
    data["verified"]["metrics"]["mIoU"] += 1e-3
    (zoo / "tiny.yaml").write_text(yaml.safe_dump(data))
    assert compare(read_card(zoo / "tiny.yaml"), record["metrics"])[0].startswith("mIoU")

    # tampered weights are refused before evaluation
    weights = zoo / "weights" / "tiny.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(UserError, match="checksum mismatch"):
        eval_config(read_card(zoo / "tiny.yaml"), [])


def test_bad_cards_are_clear_errors(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nmodel: unet-r18\nsuite: synthetic\nweight: {}\nresults: {}\n")
    with pytest.raises(UserError, match="unknown card key 'weight'; did you mean 'weights'"):
        read_card(path)


SHIPPED = "pspnet-mnv3s050_synthetic"


def shipped(**changes):
    """The shipped trained card (schema version 1) as a dict, with ``changes``."""
    from segbench.zoo.cards import zoo_dir

    return yaml.safe_load((zoo_dir() / f"{SHIPPED}.yaml").read_text()) | changes


@pytest.mark.parametrize("changes,field", [
    ({"weights": {"sha256": "0" * 64, "path": "w.safetensors", "mirror": "x"}}, "'weights.mirror'"),
    ({"results": 5}, "field 'results' must be a mapping, got 5"),
    ({"results": {"metrics": {"mIoU": "high"}}}, "field 'results.metrics.mIoU' must be a number, got 'high'"),
    ({"weights": {"path": "w.safetensors"}}, "field 'weights.sha256' must be the 64 hex digits"),
    ({"weights": {"published": True, "path": "x", "sha256": "0" * 64}}, "field 'weights' needs exactly one of"),
    ({"tolerance": "small"}, "field 'tolerance' must be a non-negative number"),
    ({"schema_version": 3}, "field 'schema_version' must be 1 or 2"),
    ({"claimed": {"metrics": {"mIoU": 0.5}, "source": "x", "dataset": "y"}}, "field 'claimed.protocol' is missing"),
])
def test_malformed_card_fields_are_one_line_naming_file_and_field(cli, tmp_path, monkeypatch, changes, field):
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(shipped(name="bad", **changes)))
    monkeypatch.setenv("SEGBENCH_ZOO", str(tmp_path))
    code, out, err = cli("eval", "zoo=bad")
    assert code == 2 and "Traceback" not in err
    line = err.strip()
    assert "\n" not in line and str(tmp_path / "bad.yaml") in line and field in line


def test_one_bad_card_does_not_break_the_others(cli, tmp_path, monkeypatch):
    from segbench.zoo.cards import zoo_dir

    shutil.copytree(zoo_dir() / "weights", tmp_path / "weights")
    (tmp_path / "good.yaml").write_text((zoo_dir() / f"{SHIPPED}.yaml").read_text())  # a v1 card stays readable
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(shipped(name="bad", results=5)))
    monkeypatch.setenv("SEGBENCH_ZOO", str(tmp_path))
    code, out, err = cli("zoo", "list")
    assert code == 0 and SHIPPED in out and "bad" not in out
    assert "bad.yaml" in err and "field 'results'" in err
    code, out, err = cli("zoo", "verify", SHIPPED)
    assert code == 0 and f"{SHIPPED}: ok" in out, out + err
    code, out, err = cli("zoo", "verify")  # every card: the good one verifies, the bad one is named, exit 2
    assert code == 2 and f"{SHIPPED}: ok" in out and "bad.yaml" in err


def test_two_cards_with_one_name_are_refused_naming_both(cli, tmp_path, monkeypatch):
    for stem in ("a", "b"):
        (tmp_path / f"{stem}.yaml").write_text(yaml.safe_dump(shipped()))
    monkeypatch.setenv("SEGBENCH_ZOO", str(tmp_path))
    code, _, err = cli("eval", f"zoo={SHIPPED}")
    assert code == 2 and str(tmp_path / "a.yaml") in err and str(tmp_path / "b.yaml") in err


@pytest.mark.parametrize("name", sorted(cards()))
def test_shipped_cards_verify_or_say_not_verified_here(cli, name):
    card = cards()[name]
    code, out, err = cli("zoo", "verify", name)
    assert code == 0, out + err
    if card.weights.published:  # published weights are never in this offline cache
        assert f"{name}: not verified here" in out and "its weights are not here" in out
    else:
        assert f"{name}: ok" in out


def test_published_cards_keep_claimed_and_verified_apart():
    published = {n: c for n, c in cards().items() if c.weights.published}
    assert {"torchvision-deeplabv3_resnet50", "torchvision-lraspp_mobilenet_v3_large", "segformer-b0_ade20k"} <= \
        set(published)
    tv = published["torchvision-deeplabv3_resnet50"]
    assert tv.claimed.metrics == {"mIoU": 0.664, "aAcc": 0.924} and not tv.claimed.reproducible
    assert "cannot run the authors' protocol" in tv.claimed.note and tv.verified is None
    assert published["torchvision-lraspp_mobilenet_v3_large"].claimed.metrics["mIoU"] == 0.579
    assert published["segformer-b0_ade20k"].claimed.metrics["mIoU"] == 0.374


def test_verify_reproduces_a_published_card_when_its_weights_and_data_are_here(tmp_path, monkeypatch):
    """A claimed figure on a protocol segbench runs: compared; one it cannot run: measured, not compared."""
    from segbench.zoo.cards import Card, Claimed, Weights
    from segbench.zoo.verify import verify

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    from segbench.models.sources.tv import cached_file

    path = cached_file("lraspp_mobilenet_v3_large")
    path.parent.mkdir(parents=True)
    from torchvision.models import get_model_builder

    torch.save(get_model_builder("lraspp_mobilenet_v3_large")(weights=None, weights_backbone=None,
                                                              num_classes=21).state_dict(), path)
    claimed = Claimed({"mIoU": 0.5}, "paper", "VOC val", "whole image", reproducible=True, tolerance=0.01)
    card = Card("x", "torchvision:lraspp_mobilenet_v3_large", "voc", Weights(published=True), claimed=claimed,
                eval_overrides=["data.root=/nonexistent"], source=tmp_path / "x.yaml")
    verdict = verify(card, run=lambda cfg: pytest.fail("must not run without data"))
    assert verdict.status == "not verified here" and "its data are not here" in verdict.details[0]

    card.eval_overrides = ["data.root=/data"]
    calls = []

    def fake_run(cfg):
        calls.append(cfg)
        out = tmp_path / "results.json"
        out.write_text(json.dumps({"schema_version": 2, "kind": "run", "suite": {"name": "voc"},
                                   "models": [{"name": "torchvision:lraspp_mobilenet_v3_large",
                                               "metrics": {"mIoU": 0.62}}]}))
        return out

    import segbench.zoo.verify as zoo_module

    monkeypatch.setattr(zoo_module, "unavailable", lambda card, download=False: None)
    monkeypatch.setattr(zoo_module, "load_config", lambda overrides: overrides)
    verdict = verify(card, run=fake_run)
    assert verdict.status == "MISMATCH" and "mIoU: claimed 0.50000000, measured 0.62000000" in verdict.details[0]
    assert "models=[torchvision:lraspp_mobilenet_v3_large]" in calls[0] and "train.enabled=false" in calls[0]
    card.claimed.reproducible = False
    card.claimed.note = "another data set"
    verdict = verify(card, run=fake_run)
    assert verdict.status == "measured" and not verdict.failed and "another data set" in verdict.details[1]


def test_zoo_list_and_unknown_card(cli):
    code, out, _ = cli("zoo", "list")
    assert code == 0 and all(name in out for name in cards())
    code, _, err = cli("eval", "zoo=nope")
    assert code == 2 and "unknown zoo model 'nope'" in err


def test_a_file_rewritten_after_its_checksum_was_taken_gets_a_new_one(tmp_path):
    import hashlib

    path = tmp_path / "w.bin"
    path.write_bytes(b"a" * 1000)
    assert sha256_file(path) == hashlib.sha256(b"a" * 1000).hexdigest()
    path.write_bytes(b"b" * 1000)  # same size, same second
    assert sha256_file(path) == hashlib.sha256(b"b" * 1000).hexdigest()
