"""Every config error stops before any work with one line, the closest names and exit code 2."""

import pytest

from segbench.config.schema import config_hash
from segbench.errors import UserError
from segbench.pipeline.validation import load_config


def test_default_suite_loads():
    cfg = load_config([])
    assert cfg.name == "synthetic"
    assert len(cfg.models) >= 3


def test_overrides_in_hydra_syntax():
    cfg = load_config(["train.iters=7", "models=[unet-r18,pspnet-resnet10t]", "train.loss={ce: 1.0, dice: 0.5}"])
    assert cfg.train.iters == 7
    assert cfg.models == ["unet-r18", "pspnet-resnet10t"]
    assert cfg.train.loss == {"ce": 1.0, "dice": 0.5}


def test_suite_given_as_a_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("models: [unet-resnet10t]\ntrain: {iters: 3}\n")
    cfg = load_config([f"suite={path}"])
    assert cfg.name == "mine" and cfg.train.iters == 3


def test_hash_ignores_output_settings_but_not_training():
    base = config_hash(load_config([]))
    assert config_hash(load_config(["output_dir=/tmp/x", "progress=false"])) == base
    assert config_hash(load_config(["train.iters=1"])) != base


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["train.iter=5"], "unknown config key 'train.iter'; did you mean 'train.iters'"),
        (["trian.iters=5"], "unknown config key 'trian.iters'; did you mean 'train.iters'"),
        (["suite=cityscape"], "unknown suite 'cityscape'"),
        (["models=[unett-resnet18]"], "unknown model 'unett'; did you mean 'unet'"),
        (["models=[unet-resnet181]"], "unknown backbone 'resnet181'; did you mean 'resnet18'"),
        (["models=[unet]"], "model 'unet' is not of the form ARCH-BACKBONE"),
        (["train.loss={cee: 1.0}"], "unknown loss 'cee'; did you mean 'ce'"),
        (["eval.metrics=[miou]"], "unknown metric 'miou'; did you mean 'mIoU'"),
        (["data.name=synthetik"], "unknown dataset 'synthetik'; did you mean 'synthetic'"),
        (["train.optimizer=sdg"], "train.optimizer: expected one of sgd, adamw, adam, got the string 'sdg'; "
                                  "did you mean 'sgd'?"),
        (["train.iters=many"], "train.iters"),
        (["train.iters=0"], "train.iters: expected a positive integer up to 1,000,000,000, got the number 0"),
        (["device=tpu"], "device: expected auto, cpu"),
        (["train.iters"], "override 'train.iters' is not of the form key=value"),
        (["models=[]"], "models: the suite names no models"),
        (["train.iters.x=1"], "config key 'train.iters' is a value, not a section"),
    ],
)
def test_config_errors(overrides, expected):
    with pytest.raises(UserError) as info:
        load_config(overrides)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_backbone_without_features_only_is_refused(monkeypatch):
    # every model of the installed timm supports features_only; an older timm may not
    import timm

    from segbench.models.registry import check_backbone

    def create_model(name, pretrained=False, features_only=False, **kwargs):
        raise RuntimeError("features_only not implemented for this model")

    monkeypatch.setattr(timm, "create_model", create_model)
    check_backbone.cache_clear()
    with pytest.raises(UserError, match="backbone 'resnet34' does not support features_only"):
        load_config(["models=[unet-resnet34]"])
    check_backbone.cache_clear()


def test_unknown_key_in_suite_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("models: [unet-resnet10t]\ntrain: {iterations: 3}\n")
    with pytest.raises(UserError, match=r"bad.yaml: unknown config key 'train.iterations'"):
        load_config([f"suite={path}"])


def test_invalid_yaml_is_one_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("models: [unet\n")
    with pytest.raises(UserError, match="is not valid YAML"):
        load_config([f"suite={path}"])


def test_cli_prints_one_line_and_exits_2(cli, tmp_path):
    code, out, err = cli("run", "train.iter=5", f"output_dir={tmp_path / 'out'}")
    assert code == 2
    assert err.strip().count("\n") == 0
    assert "train.iters" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
