"""results.json through segbench.results.schema: version 1 read and upgraded, version 2 written, wrong structure
named."""

import json
import math
from pathlib import Path

import pytest
from pydantic import ValidationError

from segbench.errors import UserError
from segbench.results.schema import (
    SCHEMA_VERSION,
    ModelRecord,
    Results,
    parse_results,
    read_results,
    write_results,
)

# A version-1 results.json as round one wrote it: the default suite's baseline of that time, kept as it was.
BASELINE = Path(__file__).resolve().parent / "data" / "results_v1.json"


def test_a_version_1_file_reads_typed_and_upgraded():
    raw = json.loads(BASELINE.read_text())
    results = read_results(BASELINE)
    assert isinstance(results, Results) and raw["schema_version"] == 1
    assert (results.schema_version, results.kind) == (2, "run")
    assert results.suite.name == "synthetic" and results.suite.config_hash == raw["suite"]["config_hash"]
    assert results.dataset.classes == ["sky", "ground", "building", "pole", "ball", "cloud", "puddle"]
    assert results.convention.ignore_index == 255 and results.environment.threads == 2
    unet = results.models[0]
    assert isinstance(unet, ModelRecord) and unet.name == "unet-resnet10t" and unet.params == 8075055
    assert unet.metrics["mIoU"] == raw["models"][0]["metrics"]["mIoU"]
    assert (unet.per_class[0].name, unet.per_class[0].support) == ("sky", 407759)
    assert unet.first_speed.images_per_second_repeats == raw["models"][0]["speed"][0]["images_per_second_repeats"]
    assert unet.first_speed.input_shape == [1, 3, 64, 64] and unet.evaluation.images == 256
    assert unet.train.iters == 150 and unet.checkpoint.path == "checkpoints/unet-resnet10t"
    assert len(unet.per_image.intersection) == 256 and len(unet.per_image.union[0]) == 7


def test_written_as_version_2_and_read_back_unchanged(tmp_path):
    results = read_results(BASELINE)
    path = write_results(tmp_path / "out" / "results.json", results)
    data = json.loads(path.read_text())
    assert (data["schema_version"], data["kind"]) == (SCHEMA_VERSION, "run") == (2, "run")
    assert list(data) == ["schema_version", "kind", "suite", "dataset", "convention", "environment", "mlflow",
                          "models", "metric_definitions"]
    record = data["models"][0]
    assert record["source"] is None and record["categories"] is None  # every field, null where unused
    assert record["per_class"][0] == {"class": "sky", "IoU": 0.9890540415659457, "Dice": 0.9944969024444219,
                                      "Acc": 0.9974053301092066, "support": 407759}
    assert read_results(path) == results
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]


def test_typed_results_are_written_nan_as_null_and_unknown_keys_survive(tmp_path, images, record, results):
    data = results(record("m-r10", *images(4, 0.5)))
    data["models"][0]["metrics"]["mAcc"] = math.nan
    data["models"][0]["future_field"] = {"x": 1}
    written = json.loads(write_results(tmp_path / "results.json", parse_results(data)).read_text())
    assert written["schema_version"] == 2 and written["kind"] == "run"
    assert written["models"][0]["metrics"]["mAcc"] is None
    assert written["models"][0]["future_field"] == {"x": 1}
    data["models"][0]["params"] = "many"
    with pytest.raises(UserError, match=r"^results: models\[0\]\.params: expected an integer or null, "
                                        r"got the string 'many'$"):
        parse_results(data)
    typed = parse_results({**data, "models": [{**data["models"][0], "params": 3}]})
    with pytest.raises(ValidationError):  # typed from birth: an assignment is checked as the constructor checks
        typed.models[0].params = "many"
    assert not (tmp_path / "bad.json").exists()


def test_kind_of_version_1_files():
    bench = {"schema_version": 1, "suite": {"name": "s"}, "models": [{"name": "m", "speed": [
        {"images_per_second": 10, "input_shape": (1, 3, 8, 8)}]}]}
    assert parse_results(bench).kind == "bench"
    score = {"schema_version": 1, "suite": {"name": "s"}, "dataset": {"name": "d", "classes": ["a"]},
             "models": [{"name": "preds", "source": "predictions"}]}
    assert parse_results(score).kind == "score"
    assert ModelRecord(name="m", speed=[{"images_per_second": 1.0}]).first_speed.images_per_second == 1.0


@pytest.mark.parametrize("content, message", [
    ("[1, 2]", " is not a segbench results.json (no 'suite' and 'models')"),
    ('{"schema_version": 3, "suite": {"name": "s"}, "models": []}',
     ": schema_version: expected 1 or 2, got the number 3"),
    ('{"schema_version": 2, "suite": {"name": "s"}, "models": []}',
     ": kind: expected one of run, bench, score, got nothing (missing)"),
    ('{"schema_version": 2, "kind": "train", "suite": {"name": "s"}, "models": []}',
     ": kind: expected one of run, bench, score, got the string 'train'; did you mean 'run'?"),
    ('{"schema_version": 1, "suite": {"name": "s"}, "models": [{"name": "m", "metrics": {"mIoU": "high"}}]}',
     ": models[0].metrics.mIoU: expected a number or null, got the string 'high'"),
    ('{"schema_version": 1, "suite": {"name": "s"}, "models": [{"name": "m", "per_class": [{"IoU": 1}]}]}',
     ": models[0].per_class[0].class: expected a string, got nothing (missing)"),
    ('{"schema_version": 1, "suite": {"name": "s"}, "models": [{"name": "m", "per_image": '
     '{"intersection": [[1, 2]], "union": [[1, 2], [3, 4]]}}]}',
     ": models[0].per_image: expected intersection and union of the same shape, got (1, 2) and (2, 2)"),
    ('{"schema_version": 1, "suite": {"name": "s"}, "models": [{"name": "m", "per_image": '
     '{"intersection": [[1, 2.5]], "union": [[1, 2]]}}]}',
     ": models[0].per_image.intersection[0][1]: expected an integer, got the number 2.5"),
    ('{"schema_version": 1, "suite": {"name": "s"}, "models": [{"name": "m", "speed": [{"images_per_second": 1, '
     '"compile": "no"}]}]}', ": models[0].speed[0].compile: expected true or false or null, got the string 'no'"),
])
def test_wrong_structure_names_the_field(tmp_path, content, message):
    path = tmp_path / "results.json"
    path.write_text(content)
    with pytest.raises(UserError) as error:
        read_results(tmp_path)
    assert str(error.value) == f"{path}{message}"


def test_the_published_json_schemas_are_generated_from_the_types():
    """schemas/*.schema.json are what the types declare now (regenerate: python -m segbench.zoo.schemas)."""
    from segbench.zoo.schemas import published, render

    folder = Path(__file__).resolve().parent.parent / "schemas"
    for name, schema in published().items():
        assert (folder / name).read_text() == render(schema), f"schemas/{name} is stale: python -m segbench.zoo.schemas"
    results = published()["results.schema.json"]
    speed = results["$defs"]["Speed"]["properties"]
    assert speed["timer"]["anyOf"][0]["enum"] == ["perf_counter", "cuda_event"]  # what deploy/timing.py writes
    assert "not_measured" in speed["memory_measure"]["anyOf"][0]["enum"]
    assert results["properties"]["kind"]["enum"] == ["run", "bench", "score"]
    assert "invalid_reason" in results["$defs"]["ModelRecord"]["properties"]


def test_every_shipped_results_and_card_file_validates_against_the_published_schema():
    """The JSON Schemas accept what segbench writes and ships (checked by jsonschema, not by segbench's reader)."""
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    root = Path(__file__).resolve().parent.parent
    results_schema = json.loads((root / "schemas" / "results.schema.json").read_text())
    written = read_results(BASELINE).to_dict()
    jsonschema.validate(written, results_schema)
    card_schema = json.loads((root / "schemas" / "card.schema.json").read_text())
    for path in sorted((root / "zoo").glob("*.yaml")):
        card = yaml.safe_load(path.read_text())
        if card.get("schema_version", 1) == 2:
            jsonschema.validate(card, card_schema)
    bad = {**written, "kind": "train"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, results_schema)


def test_a_nan_headline_metric_needs_a_reason(tmp_path, images, record, results):
    """A finished model's mIoU cannot be written as NaN without invalid_reason; with it, it is written as null."""
    data = results(record("m-r10", *images(4, 0.5)))
    data["models"][0]["metrics"]["mIoU"] = math.nan
    with pytest.raises(UserError, match=r"models\[0\]\.metrics\.mIoU: expected a finite number .*invalid_reason"):
        write_results(tmp_path / "nan.json", parse_results(data))
    assert not (tmp_path / "nan.json").exists()
    data["models"][0]["invalid_reason"] = "training diverged: non-finite loss at iteration 3"
    written = json.loads(write_results(tmp_path / "nan.json", parse_results(data)).read_text())
    assert written["models"][0]["metrics"]["mIoU"] is None
    assert written["models"][0]["invalid_reason"].startswith("training diverged")
    assert read_results(tmp_path / "nan.json").models[0].invalid_reason == written["models"][0]["invalid_reason"]
