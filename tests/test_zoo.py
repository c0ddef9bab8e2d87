"""Checkpoints and the model zoo: safe loading, checksums, cards that verify."""

import hashlib
import json
import os
import pickle

import pytest
import torch
import yaml

from segbench.checkpoints import download, load_weights, read_state_dict, save_checkpoint, sha256_file
from segbench.errors import UserError
from segbench.models import build_model
from segbench.zoo import cards, read_card

TINY = ["train.iters=3", "train.batch_size=4", "data.image_size=32", "data.train_samples=8",
        "data.val_samples=8", "eval.batch_size=4", "bench.enabled=false", "progress=false"]


def outputs(model, size=32):
    torch.manual_seed(1)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        return model.eval()(x)


def test_safetensors_round_trip(tmp_path):
    model = build_model("pspnet-resnet10t", 3)
    save_checkpoint(model, tmp_path / "ckpt", {"model": "pspnet-resnet10t"})
    meta = json.loads((tmp_path / "ckpt" / "segbench.json").read_text())
    assert meta["sha256"] == sha256_file(tmp_path / "ckpt" / "model.safetensors")
    fresh = build_model("pspnet-resnet10t", 3)
    load_weights(fresh, tmp_path / "ckpt", sha256=meta["sha256"])
    assert torch.equal(outputs(model), outputs(fresh))


def test_tampered_checkpoint_is_refused_naming_both_sums(tmp_path):
    model = build_model("pspnet-resnet10t", 3)
    weights = save_checkpoint(model, tmp_path / "ckpt", {})
    good = sha256_file(weights)
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    bad = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(UserError, match=f"expected sha256 {good}, got {bad}"):
        load_weights(build_model("pspnet-resnet10t", 3), weights, sha256=good)


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
    model = build_model("unet-resnet10t", 2)
    torch.save(model.state_dict(), tmp_path / "plain.pth")
    fresh = build_model("unet-resnet10t", 2)
    load_weights(fresh, tmp_path / "plain.pth")
    assert torch.equal(outputs(model), outputs(fresh))

    model.save_pretrained(str(tmp_path / "smp"))  # segmentation-models-pytorch's own format
    fresh = build_model("unet-resnet10t", 2)
    load_weights(fresh, tmp_path / "smp")
    assert torch.equal(outputs(model), outputs(fresh))


def test_a_checkpoint_for_another_model_is_refused(tmp_path):
    save_checkpoint(build_model("pspnet-resnet10t", 3), tmp_path / "ckpt", {})
    with pytest.raises(UserError, match="does not fit the model"):
        load_weights(build_model("fpn-resnet10t", 3), tmp_path / "ckpt")


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

    from segbench.runner import run as run_suite
    from segbench.zoo import compare, eval_config

    cfg = eval_config(card, [f"output_dir={tmp_path / 'eval'}", "tracking.enabled=false", "progress=false"])
    assert not cfg.train.enabled
    record = json.loads(run_suite(cfg).read_text())["models"][0]
    assert compare(card, record) == []
    assert abs(record["metrics"]["mIoU"] - trained["metrics"]["mIoU"]) <= 1e-6

    # a card whose reported number is off fails verification
    data = yaml.safe_load((zoo / "tiny.yaml").read_text())
    data["results"]["metrics"]["mIoU"] += 1e-3
    (zoo / "tiny.yaml").write_text(yaml.safe_dump(data))
    assert compare(read_card(zoo / "tiny.yaml"), record)[0].startswith("mIoU")

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


@pytest.mark.parametrize("name", sorted(cards()))
def test_shipped_cards_verify(cli, name):
    code, out, err = cli("zoo", "verify", name)
    assert code == 0, out + err
    assert f"{name}: ok" in out


def test_zoo_list_and_unknown_card(cli):
    code, out, _ = cli("zoo", "list")
    assert code == 0 and all(name in out for name in cards())
    code, _, err = cli("eval", "zoo=nope")
    assert code == 2 and "unknown zoo model 'nope'" in err
