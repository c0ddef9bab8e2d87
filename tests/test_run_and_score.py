"""``segbench run`` and ``segbench score`` share one way of turning a split's counts into a model record: the
predictions a run saves, scored again, give the same record apart from what only a model has (weights,
training, timing, calibration from its probabilities) and what only ``score`` has (the void column)."""

import json

import pytest
from fixtures_layouts import make_cityscapes_instances

from segbench.pipeline.runner import run
from segbench.pipeline.score import score_predictions
from segbench.pipeline.validation import load_config

# what one of the two commands alone can know: the model's source, training and timing (run), the folder and label
# space (score), and the MLflow run
SOURCE_FIELDS = {"name", "arch", "backbone", "params", "weights", "origin", "source", "train", "checkpoint",
                 "evaluation", "data", "speed", "speed_skipped", "mlflow_run_id"}
FROM_PROBABILITIES = {"ECE"}  # calibration needs the model's softmax, which a PNG does not hold


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGBENCH_CACHE_DIR", str(tmp_path / "cache"))


def test_score_of_a_runs_saved_predictions_gives_the_runs_record(tmp_path):
    root = make_cityscapes_instances(tmp_path / "cs")  # label ids, instance ids: iIoU and the categories too
    settings = ["suite=cityscapes", f"data.root={root}", "data.num_workers=0", "models=[unet-resnet10t]",
                "train.enabled=false", "bench.enabled=false", "tracking.enabled=false", "progress=false",
                "eval.mode=whole", "eval.save_predictions=true"]
    ran = json.loads(run(load_config([*settings, f"output_dir={tmp_path / 'run'}"])).read_text())["models"][0]
    saved = tmp_path / "run" / ran["passport"]["predictions"]["labels"]
    scored = json.loads(score_predictions(load_config([*settings, f"output_dir={tmp_path / 'score'}"]), saved,
                                          "dataset").read_text())["models"][0]

    assert scored["evaluation"]["void_pixels"] == 0 and scored["source"] == "predictions"
    assert scored["confusion_matrix"] == [row + [0] for row in ran["confusion_matrix"]]  # score's void column
    scored["confusion_matrix"] = [row[:-1] for row in scored["confusion_matrix"]]
    for record in (ran, scored):
        record["metrics"] = {k: v for k, v in record["metrics"].items() if k not in FROM_PROBABILITIES}
        record["passport"] = {k: v for k, v in record["passport"].items() if k not in ("calibration", "predictions")}
    assert set(ran) == set(scored)
    differing = sorted(key for key in set(ran) - SOURCE_FIELDS if ran[key] != scored[key])
    assert differing == []
    assert ran["metrics"]["mIoU"] == scored["metrics"]["mIoU"] and "iIoU" in ran["metrics"]
    assert set(ran["categories"]) == {"IoU", "mIoU"}  # category IoU and their mean, from both commands
