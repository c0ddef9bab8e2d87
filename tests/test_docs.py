"""Every command in the README's and the documentation pages' code blocks runs as written, through bash, in one
temporary folder, in the order a reader meets them (the README, then the site's pages in their nav order).

``COMMANDS`` says, for each command, the exit code it must give and the small overrides appended where it trains or
times (so that it takes seconds), or why it is not run (an install line, a synopsis, a server). A command that needs a
real data set must give its one-line refusal (exit 2). A command that is not in the table fails
``test_every_command_in_the_docs_is_in_the_table``: a new command in the docs must be handled here.
"""

from __future__ import annotations

import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))


def pages() -> list[Path]:
    """The README, then every page of the site in its nav order (mkdocs.yml)."""
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    return [ROOT / "README.md", *(ROOT / "docs" / next(iter(entry.values())) for entry in nav)]


# --- extraction ---------------------------------------------------------------------------------------------

FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
SHELL_FENCES = {"bash", "sh", "shell", "console"}


def code_blocks(markdown: str) -> list[list[str]]:
    """The shell code blocks of a Markdown text: indented (4 spaces, after a blank line) and fenced ``bash``,
    ``sh``, ``shell`` or ``console`` blocks (whose ``$ `` prompts are removed), each as a list of lines."""
    blocks, lines = [], markdown.splitlines()
    i, previous_blank = 0, True
    while i < len(lines):
        line = lines[i]
        fence = FENCE.match(line)
        if fence:
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip().startswith(fence.group(1))),
                       len(lines))
            if fence.group(2) in SHELL_FENCES:
                body = lines[i + 1:end]
                if fence.group(2) == "console":  # only the prompted lines are commands; the rest is output
                    body = [b.strip()[2:] for b in body if b.strip().startswith("$ ")]
                blocks.append(body)
            i, previous_blank = end + 1, True  # a fence is no paragraph: an indented block may follow
            continue
        if line.startswith("    ") and line.strip() and previous_blank:
            block = []
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                block.append(lines[i][4:])
                i += 1
            blocks.append(block)
            previous_blank = False
            continue
        previous_blank = not line.strip()
        i += 1
    return blocks


def _strip_comment(line: str) -> str:
    """``line`` without a trailing shell comment (a ``#`` after a blank, outside quotes)."""
    quote = None
    for k, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (k == 0 or line[k - 1].isspace()):
            return line[:k].rstrip()
    return line.rstrip()


def commands(block: list[str]) -> list[str]:
    """The shell commands of a block: continuation lines joined, comments dropped, ``a && b`` split in two,
    whitespace collapsed outside quotes (so that the table's keys read as the docs do)."""
    joined, pending = [], ""
    for line in block:
        line = _strip_comment(line)
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        text = (pending + line.strip()).strip()
        pending = ""
        if text:
            joined.extend(part.strip() for part in text.split(" && "))
    if pending.strip():
        joined.append(pending.strip())
    return [_collapse(c) for c in joined]


def _collapse(command: str) -> str:
    parts, quote, out = [], None, ""
    for char in command:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char.isspace():
            if out:
                parts.append(out)
            out = ""
            continue
        out += char
    return " ".join([*parts, out] if out else parts)


def documented_commands() -> list[tuple[str, str]]:
    """(page, command) for every command of every page, in reading order."""
    return [(page.relative_to(ROOT).as_posix(), command)
            for page in pages() for block in code_blocks(page.read_text()) for command in commands(block)]


# --- what each command must do ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    """Run the command through bash; it must exit with ``exit``. ``append``: overrides added at its end;
    ``replace``: placeholders of the docs and what stands for them here; ``says``: text its output must hold
    (for exit 2, the one-line refusal)."""

    exit: int = 0
    append: str = ""
    replace: dict[str, str] = field(default_factory=dict)
    says: str = ""


@dataclass(frozen=True)
class Skip:
    reason: str


QUIET = "progress=false"
# two steps on 32-pixel scenes (the suites' 64: suite=survey's 9 models take 4.5 s of CPU, not 3.0 s)
TRAIN = (f"train.iters=2 train.batch_size=4 data.image_size=32 data.val_samples=4 eval.batch_size=4 "
         f"bench.enabled=false {QUIET}")
EVAL = f"data.val_samples=4 eval.batch_size=4 bench.enabled=false {QUIET}"
BENCH = ("bench.warmup=1 bench.iters=2 bench.repeats=1 bench.min_seconds=0 bench.input_size=[64,64] "
         f"bench.isolate=false {QUIET}")
# where a command exports every model to ONNX (seconds of CPU a model): one model, the one with the smallest graph
# (FCN-32s: backbone and a 1x1 scorer; its export takes half of U-Net's)
ONE = "models=[fcn32s-resnet10t]"
NO_DATA = "data.root is not set"
OFFLINE = "offline"
CUDA = torch.cuda.is_available()

INSTALL = Skip("installs segbench; CI installed it before this test")
SYNOPSIS = Skip("a synopsis ([optional], A|B alternatives, NAME placeholders), not a command")
SERVER = Skip("needs a team's MLflow server; tests/test_tracking_server.py runs one")
DOWNLOAD = Skip("downloads published weights: nothing may be downloaded in tests")
TORCHRUN = Skip("torchrun with several processes per node; tests/test_distributed.py runs torchrun on 2 CPU processes")

COMMANDS: dict[str, Run | Skip] = {
    # README.md
    "pip install -e .": INSTALL,
    "segbench run": Run(append=TRAIN),
    "pip install -e '.[dev]'": INSTALL,
    "pytest -n auto": Skip("the test suite: this test is part of it"),
    "segbench run models=[unet-r18,pspnet-resnet10t] train.iters=50 seed=1": Run(append=TRAIN),
    "segbench eval suite=voc data.root=/data/voc models=[torchvision:lraspp_mobilenet_v3_large]":
        Run(2, says="/data/voc"),
    "segbench bench models=[unet-r18] bench.batch_sizes=[1,4]": Run(append=BENCH),
    "segbench report": Run(),
    "segbench gate latest baselines/synthetic.json": Run(1, says="FAIL: regression"),  # 2 iterations regress
    # docs/usage.md
    "segbench run suite=synthetic train.iters=50": Run(append=TRAIN),
    "segbench run 'models=[unet-r18,pspnet-resnet10t]' 'train.loss={ce: 1.0, dice: 0.5}'": Run(append=TRAIN),
    "segbench run suite=my_suite.yaml device=cpu": Run(append=TRAIN),
    "segbench list models": Run(says="unet"),
    "segbench list backbones 'resnet*'": Run(says="resnet10t"),
    "segbench list datasets": Run(says="cityscapes"),
    "segbench list losses": Run(says="dice"),
    "segbench list metrics": Run(says="mIoU"),
    "segbench list suites": Run(says="synthetic"),
    "segbench run train.itres=50": Run(2, says="train.iters"),
    # docs/data.md
    "segbench run suite=cityscapes data.root=/data/cityscapes": Run(2, says="/data/cityscapes"),
    "segbench score suite=cityscapes data.root=/data/cityscapes pred_dir=preds/ [label_space=auto|train|dataset]":
        SYNOPSIS,
    # docs/models.md
    "segbench run suite=survey": Run(append=TRAIN),
    "segbench zoo list": Run(),
    "segbench zoo add outputs/synthetic/20261123-120000 --model pspnet-resnet10t --name my-card":
        Run(replace={"outputs/synthetic/20261123-120000": "$(ls -d outputs/synthetic/*/ | head -n 1)"}),
    "segbench eval zoo=my-card": Run(append=EVAL),
    "segbench zoo verify [NAME]": Run(replace={"[NAME]": "my-card"}, says="my-card: ok"),
    "segbench run models=[unet-resnet10t] weights.unet-resnet10t=ckpt.pth train.enabled=false": Run(append=EVAL),
    "segbench run models=[unet-resnet10t] backbone_weights.resnet10t=resnet10t.safetensors": Run(append=TRAIN),
    "segbench run models=[unet-resnet10t] backbone_weights.resnet10t=timm": Run(2, append=TRAIN, says=OFFLINE),
    "segbench run suite=my-suite.yaml \"models=[unet-tf_efficientnet_lite0]\" "
    "backbone_weights.tf_efficientnet_lite0=lite0.pth": Skip(
        "needs the original port's lite0 file and the suite file above; tests/test_weights_normalisation.py builds "
        "both and checks the 240 of 240 tensors and the statistics fed"),
    "segbench run models=[unet-efficientnet_lite0] backbone_weights.efficientnet_lite0=lite0.pth "
    "\"normalisation.efficientnet_lite0={mean: [0.5,0.5,0.5], std: [0.5,0.5,0.5]}\"": Run(
        2, append=TRAIN, says="backbone_weights.efficientnet_lite0"),  # this lite0.pth is in the original layout
    "segbench eval \"models=[hf:./backbone-only]\" \"accept_uninitialised=[hf:./backbone-only]\"": Run(
        2, append=EVAL, says="hf:./backbone-only"),
    "segbench eval models=[onnx:deploy/unet.onnx]": Run(2, append=EVAL, says="deploy/unet.onnx"),
    "segbench eval models=[export:deploy/unet.pt2] eval.backends=[eager,onnxruntime]": Run(
        2, append=EVAL, says="deploy/unet.pt2"),
    "segbench bench models=[onnx:deploy/unet_1x3x512x1024.onnx] bench.input_size=[512,1024]": Run(
        2, append=BENCH, says="deploy/unet_1x3x512x1024.onnx"),
    "segbench eval models=[onnx:vendor.onnx] eval.mode=slide eval.window=[512,512] eval.stride=[341,341]": Run(
        2, append=EVAL, says="vendor.onnx"),
    # docs/robustness.md
    "pip install 'segbench[robustness]'": INSTALL,
    "segbench run suite=synthetic_robustness": Run(
        append=f"{TRAIN} eval.corruptions=[brightness,gaussian_noise] eval.severities=[1] models=[unet-resnet10t]",
        says="mPC"),
    "segbench run suite=cityscapes eval.corruptions=[all]": Run(2, says=NO_DATA),
    "segbench run suite=voc eval.corruptions=[noise,fog] eval.severities=[3]": Run(2, says=NO_DATA),
    # docs/plugins.md (my_models.py is the page's own example, written by prepare_folder)
    "segbench run 'imports=[my_models]' 'models=[tinynet,unet-resnet18]'": Run(append=TRAIN),
    "segbench eval suite=voc data.root=/data/voc models=[torchvision:deeplabv3_resnet50] download=true": DOWNLOAD,
    "segbench eval suite=voc models=[torchvision:fcn_resnet50] weights.torchvision:fcn_resnet50=fcn.pth":
        Run(2, says="segbench: error:"),
    "segbench eval suite=ade20k models=[hf:nvidia/segformer-b0-finetuned-ade-512-512] download=true": DOWNLOAD,
    "segbench eval suite=ade20k models=[hf:./my-segformer]": Run(2, says="segbench: error:"),
    "segbench eval suite=cityscapes models=[smp:./my-unet]": Run(2, says="segbench: error:"),
    "segbench bench \"models=[torchvision:deeplabv3_mobilenet_v3_large,hf:./tiny-segformer,deeplabv3plus-resnet50]\" "
    "weights.torchvision:deeplabv3_mobilenet_v3_large=dlv3mnv3.pth bench.input_size=[512,512] bench.batch_sizes=[1] "
    "bench.repeats=3 tracking.enabled=false": Run(append=BENCH),
    # docs/reports.md
    "segbench report outputs/ --out reports": Run(),
    "mlflow ui --backend-store-uri sqlite:///mlflow.db": Skip("a web server that runs until it is stopped"),
    # docs/scale.md
    "torchrun --standalone --nproc_per_node=4 -m segbench run suite=cityscapes data.root=/data/cityscapes": TORCHRUN,
    "torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 -m segbench run ...":
        TORCHRUN,
    "torchrun --standalone --nproc_per_node=2 -m segbench eval zoo=NAME": TORCHRUN,
    "torchrun --standalone --nproc_per_node=N -m segbench run train.enabled=false data.val_samples=1024 "
    "bench.enabled=false tracking.enabled=false": TORCHRUN,
    "segbench run suite=survey shard=1/4": Run(append=TRAIN),
    "segbench run suite=cityscapes shard=auto": Run(2, says="segbench: error:"),
    "segbench report outputs/sweeps/4242 --out reports": Skip("the folder of a sweep's job array (a placeholder id)"),
    "segbench report --tracking-uri http://mlflow.example.internal:5000 --out reports": SERVER,
    "sudo apt-get install postgresql": Skip("installs PostgreSQL; .ci/run installs it for the tracking server test"),
    "sudo -u postgres createuser --pwprompt mlflow": SERVER,
    "sudo -u postgres createdb --owner mlflow mlflow": SERVER,
    "pip install mlflow psycopg2-binary": INSTALL,
    "mlflow server --backend-store-uri postgresql+psycopg2://mlflow:PASSWORD@localhost:5432/mlflow "
    "--artifacts-destination /srv/mlflow/artifacts --host 0.0.0.0 --port 5000 "
    "--allowed-hosts 'mlflow.example.internal:5000,localhost:*'": SERVER,
    "segbench run suite=cityscapes tracking.uri=http://mlflow.example.internal:5000": SERVER,
    "export MLFLOW_TRACKING_URI=http://mlflow.example.internal:5000": SERVER,
    "segbench report --out reports": Run(),
    # docs/speed.md
    "segbench bench models=[unet-r18,pspnet-r50] bench.input_size=[512,1024] bench.batch_sizes=[1,4]":
        Run(append=BENCH),
    "segbench bench bench.precision=bf16 bench.channels_last=true bench.backends=[eager,compile] device=cuda":
        Run(append=BENCH) if CUDA else Run(2, says="cuda"),
    "pip install -e '.[deploy]'": INSTALL,
    "segbench bench bench.backends=[eager,onnxruntime] bench.input_size=[256,512]": Run(append=f"{BENCH} {ONE}"),
    "segbench run eval.backends=[eager,onnxruntime] bench.backends=[eager,onnxruntime]":
        Run(append=f"{TRAIN} {ONE}"),
    "segbench gate RUN baselines/synthetic.json --max-backend-diff mIoU=0.1": Run(1, replace={"RUN": "latest"}),
    "segbench bench bench.backends=[eager,onnxruntime] bench.input_size=[256,512] bench.batch_sizes=[1] "
    "bench.min_seconds=3 bench.repeats=3 device=cpu tracking.enabled=false": Run(append=f"{BENCH} {ONE}"),
    # docs/gates.md
    "segbench gate RUN BASELINE": SYNOPSIS,
    "python benches/gate_noise.py --pairs 10 --variant-runs 2 --keep /tmp/gate-noise": Skip(
        "a measurement: 17 runs of the default suite, about 60 minutes of a quiet machine; tests/test_gate.py checks "
        "the same verdicts on a fake clock"),
    "segbench gate RUN BASELINE [--max-drop mIoU=0.5] [--max-speed-drop 20] "
    "[--reference-model M | --absolute-speed]": SYNOPSIS,
    "[--require-significant] [--max-backend-diff mIoU=0.1] [--out DIR] [--tracking-uri URI]": SYNOPSIS,
    "segbench baseline update RUN BASELINE": SYNOPSIS,
    # docs/development.md
    "nox -s tests": Skip("the test suite in a nox session: this test is part of it"),
    "nox -s lint": Skip("ruff in a nox session (CI runs ruff)"),
    "nox -s bench": Skip("benchmarks, measured on a quiet machine"),
}


# --- the folder a reader works in ---------------------------------------------------------------------------

SYNTHETIC_CLASSES = ["sky", "ground", "building", "pole", "ball", "cloud", "puddle"]


def page_example(page: Path, first_line: str) -> str:
    """The fenced Python example of ``page`` that starts with ``first_line`` (a file the page asks the reader to
    write), as written there."""
    text = page.read_text()
    start = text.index("```python\n" + first_line) + len("```python\n")
    return text[start:text.index("```", start)]


def prepare_folder(folder: Path) -> dict[str, str]:
    """The files the docs assume a reader has (a checkout's baselines, a suite file of their own, checkpoints
    built with random weights), and the environment: offline, every cache and store inside ``folder``."""
    from test_sources import segformer_folder, torchvision_checkpoint

    shutil.copytree(ROOT / "baselines", folder / "baselines")
    suite = yaml.safe_load((ROOT / "suites" / "synthetic.yaml").read_text())
    suite["models"] = ["unet-resnet10t"]
    (folder / "my_suite.yaml").write_text(yaml.safe_dump(suite))
    torchvision_checkpoint(folder / "dlv3mnv3.pth", "deeplabv3_mobilenet_v3_large", num_classes=len(SYNTHETIC_CLASSES))
    segformer_folder(folder / "tiny-segformer", SYNTHETIC_CLASSES)
    _backbone_files(folder)
    (folder / "my_models.py").write_text(page_example(ROOT / "docs" / "plugins.md", "# my_models.py"))
    (folder / "zoo").mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "SEGBENCH_DEBUG", "CITYSCAPES_ROOT", "ADE20K_ROOT", "VOC_ROOT")}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(folder / ".hf"), TORCH_HOME=str(folder / ".torch"),
               SEGBENCH_CACHE_DIR=str(folder / ".cache"), SEGBENCH_ZOO=str(folder / "zoo"),
               OMP_WAIT_POLICY="PASSIVE", MLFLOW_ENABLE_ASYNC_LOGGING="false",
               PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    return env


def _backbone_files(folder: Path) -> None:
    """``ckpt.pth`` (a U-Net state dict), ``resnet10t.safetensors`` (a timm backbone) and ``lite0.pth`` (an
    EfficientNet-Lite0 under another library's key names, as the docs' backbone_key_map expects)."""
    import timm
    from safetensors.torch import save_file

    from segbench.models import factory

    torch.manual_seed(0)
    torch.save(factory.build("unet-resnet10t", SYNTHETIC_CLASSES).module.state_dict(), folder / "ckpt.pth")
    save_file(timm.create_model("resnet10t", pretrained=False).state_dict(), folder / "resnet10t.safetensors")
    lite0 = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    renamed = {re.sub(r"^blocks\.", "_blocks.", re.sub(r"^conv_stem", "_conv_stem", k)): v for k, v in lite0.items()}
    torch.save(renamed, folder / "lite0.pth")


SHELL_ONLY = re.compile(r"\$\(|[|;&<>`]")  # command substitution, pipes, lists, redirections: bash runs the line
SUBSTITUTION = re.compile(r"\$\(([^()]*)\)")  # $(...) with no parentheses inside


def expand_substitutions(line: str, folder: Path, env: dict[str, str]) -> str:
    """``line`` with each ``$(...)`` replaced by what bash prints for it (trailing newlines removed, unquoted, so
    that it splits into words as bash splits it): a ``segbench`` line that needs the shell only for that can still
    run in this process."""
    def output(match: re.Match) -> str:
        done = subprocess.run(["bash", "-c", match.group(1)], cwd=folder, env=env, capture_output=True, text=True,
                              timeout=60)
        return done.stdout.rstrip("\n")
    return SUBSTITUTION.sub(output, line)


def run_in_process(words: list[str], capsys) -> tuple[int, str, str]:
    """``segbench WORDS`` through the console entry point in this process (the words a shell would pass it):
    the same code as the script, without a new interpreter's seconds of imports for each command."""
    from segbench.cli.main import entry

    saved = sys.argv
    sys.argv = ["segbench", *words]
    code = 0
    try:
        entry()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = saved
    out, err = capsys.readouterr()
    return code, out, err


def run_command(command: str, expect: Run, folder: Path, env: dict[str, str], capsys=None) -> str | None:
    """Run one documented command as bash would; return what went wrong, or None. A plain ``segbench ...`` line is
    split into words as bash splits it (shlex, POSIX rules: the quoting a reader types is what is tested) and run
    in this process; a line that needs the shell itself runs through bash."""
    line = command
    for placeholder, value in expect.replace.items():
        line = line.replace(placeholder, value)
    line = f"{line} {expect.append}".strip()
    if capsys is not None and line.startswith("segbench ") and not SHELL_ONLY.search(SUBSTITUTION.sub("", line)):
        line = expand_substitutions(line, folder, env)
    words = shlex.split(line)
    if capsys is not None and words[0] == "segbench" and not SHELL_ONLY.search(line):
        code, stdout, stderr = run_in_process(words[1:], capsys)
    else:
        done = subprocess.run(["bash", "-c", line], cwd=folder, env=env, capture_output=True, text=True, timeout=600)
        code, stdout, stderr = done.returncode, done.stdout, done.stderr
    output = stdout + stderr
    problems = []
    if code != expect.exit:
        problems.append(f"exit {code}, expected {expect.exit}")
    if "Traceback" in stderr:
        problems.append("a traceback")
    if expect.exit == 2:
        last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        if not last.startswith("segbench: error: "):
            problems.append("no one-line refusal at the end of stderr")
    if expect.says and expect.says not in output:
        problems.append(f"its output lacks {expect.says!r}")
    if problems:
        return f"$ {line}\n  " + "; ".join(problems) + "\n" + "\n".join("  | " + t for t in output[-3000:].splitlines())
    return None


def cpu_seconds() -> float:
    """User and system CPU time of this process and of its finished subprocesses: what a command costs, however
    many other processes share the machine."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# --- tests --------------------------------------------------------------------------------------------------

def test_code_blocks_are_found_as_markdown_defines_them():
    text = ("Intro\n\n    segbench run a=1 \\\n      b=2   # comment\n    pip install x && segbench list suites\n"
            "\n1. item\n    not code: no blank line before\n\n```bash\nsegbench report  # all\n```\n"
            "```yaml\nmodels: [x]\n```\n```console\n$ segbench zoo list\ncard  model\n```\n"
            "    segbench run 'train.loss={ce: 1.0, dice: 0.5}'  \"a  #b\"\n")
    found = [c for block in code_blocks(text) for c in commands(block)]
    assert found == ["segbench run a=1 b=2", "pip install x", "segbench list suites", "segbench report",
                     "segbench zoo list", "segbench run 'train.loss={ce: 1.0, dice: 0.5}' \"a  #b\""]


def test_every_command_in_the_docs_is_in_the_table():
    documented = documented_commands()
    assert len(documented) > 40
    missing = [f"{page}: {command}" for page, command in documented if command not in COMMANDS]
    assert missing == [], "commands in the docs that tests/test_docs.py's COMMANDS does not know (add them)"
    unused = sorted(set(COMMANDS) - {command for _, command in documented})
    assert unused == [], "COMMANDS entries for commands no longer in the docs (remove them)"


@pytest.mark.slow
def test_the_commands_of_the_docs_run_as_written(tmp_path, capsys, monkeypatch, _migrated_store):
    env = prepare_folder(tmp_path)
    shutil.copy(_migrated_store, tmp_path / "mlflow.db")  # the default store, its schema made once per session
    for key in set(os.environ) - set(env):
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    seen, failures, durations, ran, skipped = set(), [], [], 0, 0
    start = time.perf_counter()
    for page, command in documented_commands():
        if command in seen:
            continue
        seen.add(command)
        expect = COMMANDS[command]
        if isinstance(expect, Skip):
            skipped += 1
            continue
        ran += 1
        began, cpu = time.perf_counter(), cpu_seconds()
        problem = run_command(command, expect, tmp_path, env, capsys)
        durations.append((cpu_seconds() - cpu, time.perf_counter() - began, command))
        if problem:
            failures.append(f"{page}: {problem}")
    with capsys.disabled():
        print(f"\n{ran} documented commands run, {skipped} skipped, in {time.perf_counter() - start:.0f} s; "
              "the most CPU (user+sys, with subprocesses):")
        for cpu, seconds, command in sorted(durations, reverse=True)[:15]:
            print(f"  {cpu:6.1f} s CPU {seconds:6.1f} s wall  {command[:90]}")
    assert failures == [], "\n\n".join(failures)


def test_the_api_page_example_runs_as_written_and_leaves_only_what_it_asks_for(tmp_path, capsys, monkeypatch):
    """docs/api.md's notebook example, run as written in an empty folder: its tables, confusion matrix and figures
    work, and it leaves only the files it asks for (nothing from evaluate without output_dir, no MLflow store). It
    runs in this process, as a notebook's cell runs in its kernel: without a new interpreter's seconds of imports."""
    code = page_example(ROOT / "docs" / "api.md", "# notebook.py")
    for key in ("MLFLOW_TRACKING_URI", "SEGBENCH_DEBUG"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "notebook.py", "exec"), {"__name__": "__main__"})  # an exception fails the test, as written
    out = capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["confusion.png", "reports", "tiny-eval"]
    assert "labelled pixels" in out and "PASS" in out
