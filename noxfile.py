"""nox sessions: tests, lint, bench."""

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """Run the test suite offline (in the current environment, where torch is already installed)."""
    session.run("pytest", *(session.posargs or ["-n", "auto"]), env={"HF_HUB_OFFLINE": "1"})


@nox.session(venv_backend="none")
def lint(session: nox.Session) -> None:
    session.run("ruff", "check", "segbench", "tests", "noxfile.py")


@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """pytest-benchmark benchmarks, saved as JSON under .benchmarks/ for --benchmark-compare."""
    session.run("pytest", "benches", "--benchmark-only", "--benchmark-autosave", *session.posargs,
                env={"HF_HUB_OFFLINE": "1"})
