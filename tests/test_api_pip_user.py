"""What a newcomer who installed segbench with pip meets in the README and the docs: the baseline the README gates
against is installed, the suggestion for ``deeplabv3+``, a small model's parameter count, ``folder_example`` with
one's own classes, the gate's word when nothing was timed."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["data.val_samples=4", "data.image_size=32", "eval.batch_size=2", "progress=false", "tracking.enabled=false",
         "train.enabled=false", "bench.enabled=false"]


def test_the_readme_baseline_is_installed_and_found_outside_a_clone(tmp_path, monkeypatch, cli):
    from segbench.results.find import bundled

    wheel = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert wheel["force-include"]["baselines"] == "segbench/_resources/baselines"
    code, _, err = cli("run", "models=[fcn32s-resnet10t]", *SMALL, f"output_dir={tmp_path / 'run'}")
    assert code == 0, err
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    monkeypatch.chdir(outside)  # no baselines/ here: the installed copy is read
    installed = bundled(Path("baselines/synthetic.json"))
    assert installed.read_bytes() == (ROOT / "baselines" / "synthetic.json").read_bytes()
    code, out, err = cli("gate", str(tmp_path / "run"), "baselines/synthetic.json")
    assert code in (0, 1) and "no results file" not in err, err
    assert "against baseline baselines/synthetic.json" in out
    code, out, err = cli("gate", str(tmp_path / "run"), str(tmp_path / "run"))
    assert code == 0 and "(no model was timed in both run and baseline" in out  # not "one model timed in both"
    (outside / "baselines").mkdir()  # a file of that name here comes first
    (outside / "baselines" / "synthetic.json").write_text("{}")
    code, _, err = cli("gate", str(tmp_path / "run"), "baselines/synthetic.json")
    assert code == 2 and "not a segbench results.json" in err
    assert bundled(Path("baselines/nothing.json")) == Path("baselines/nothing.json")


def test_deeplabv3_plus_suggests_deeplabv3plus_first(cli):
    code, _, err = cli("run", "models=[deeplabv3+-resnet18]")
    assert code == 2 and "did you mean 'deeplabv3plus'" in err
    code, _, err = cli("run", "models=[UNet++-resnet18]")
    assert code == 2 and "did you mean 'unetplusplus'" in err


@pytest.mark.parametrize("params,shown", [(2819, "0.0028"), (11_689_512, "11.69"), (287, "0.00029")])
def test_a_small_parameter_count_keeps_its_digits(params, shown):
    from segbench.report.tables import TABLE, cell

    assert TABLE["params"][1] == "mega"
    assert cell(float(params), "mega") == shown
    assert float(shown) == pytest.approx(params / 1e6, rel=0.05)  # two significant digits at least


def test_the_console_table_shows_a_small_parameter_count(tmp_path, cli):
    code, out, err = cli("run", "models=[fcn32s-resnet10t]", *SMALL, f"output_dir={tmp_path / 'run'}")
    assert code == 0, err
    from segbench.results.schema import read_results

    params = read_results(tmp_path / "run").models[0].params
    line = next(line for line in out.splitlines() if "fcn32s-resnet10t" in line)
    shown = float(line.split()[-2])
    assert shown == pytest.approx(params / 1e6, rel=0.01) or shown == pytest.approx(params / 1e6, abs=0.005)


def test_folder_example_with_ones_own_classes_gets_a_palette(tmp_path):
    from segbench.data.registry import dataset_info
    from segbench.pipeline.validation import load_config

    for split in ("images/val", "masks/val"):
        (tmp_path / split).mkdir(parents=True)
    cfg = load_config(["suite=folder_example", f"data.root={tmp_path}", "data.classes=[road,car,person]",
                       "train.enabled=false"])
    palette = dataset_info(cfg.data).palette
    assert len(palette) == 3 and len(set(palette)) == 3
    assert all(len(colour) == 3 and all(0 <= v <= 255 for v in colour) for colour in palette)
