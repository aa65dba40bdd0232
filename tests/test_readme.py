"""The README's Python examples run as written (here in simulator mode when there is no GPU), and its two commands
are the ones CI runs."""

import pathlib
import re

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_usage_example_runs(capsys):
    code = python_blocks()[0]
    namespace = {}
    exec(compile(code, "README.md (usage example)", "exec"), namespace)
    x, dlogits = namespace["x"], namespace["dlogits"]
    assert dlogits.shape == x.shape and np.isfinite(dlogits).all()
    assert "simulator" in capsys.readouterr().out or namespace["gpunn"].mode() == "cuda"


def test_flatten_example_runs():
    params = [np.ones((3, 4), np.float32), np.zeros(5, np.float32)]
    code = python_blocks()[1].replace("...", "gviews[0][...] = 1.0; gviews[1][...] = -1.0")
    namespace = {"params": params, "np": np, "gpunn": __import__("gpunn")}
    exec(compile(code, "README.md (flatten example)", "exec"), namespace)
    views = namespace["views"]
    assert views[0].shape == (3, 4) and views[1].shape == (5,)
    # Adam's first step moves every parameter by lr against the sign of its gradient
    assert np.allclose(views[0], 1.0 - 1e-3) and np.allclose(views[1], 1e-3)


def test_pytorch_example_runs():
    pytest.importorskip("torch")
    code = python_blocks()[2]
    assert "import gpunn.torch" in code
    namespace = {}
    exec(compile(code, "README.md (PyTorch example)", "exec"), namespace)
    opt = namespace["opt"]
    assert type(opt).__module__ == "gpunn.torch.optim" and opt.param_groups[0]["lr"] < 1e-4  # cosine: near 0
    # 4 balanced random classes: a model that learned nothing sits at ln 4 = 1.386
    loss = namespace["loss"].item()
    assert loss < 1.0, loss


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"```bash\n(.*?)```", README, flags=re.S)[0].strip().splitlines()
    assert len(commands) == 2, "the README opens with exactly two commands"
    test_command = commands[1].split("#")[0].strip()
    assert "pytest" in test_command
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in [line.strip() for line in ci], f"{test_command!r} is not a line of .ci/run"


def test_readme_links_point_to_files_in_the_repository():
    links = re.findall(r"\]\(([^)#]+)\)", README)
    assert "docs/definitions.md" in links
    missing = [link for link in links if "://" not in link and not (ROOT / link).exists()]
    assert not missing, f"README links to files that are not in the repository: {missing}"


def test_nothing_points_outside_the_repository_for_definitions():
    """The definitions gpunn matches are in docs/definitions.md; no file may send a reader to a notes file that is not
    shipped (the names are assembled here so that this file does not match itself)."""
    outside = ["REFERENCE" + ".md", "../" + "shared", "work/" + "shared"]
    files = [ROOT / "README.md", *ROOT.glob("docs/**/*.*"), *ROOT.glob("gpunn/**/*.py"), *ROOT.glob("tests/**/*.py"),
             *ROOT.glob("examples/**/*.*"), *ROOT.glob("benchmarks/*.*")]
    texts = {path: path.read_text(errors="replace") for path in files if path.suffix in (".md", ".py", ".sh")}
    hits = [f"{path.relative_to(ROOT)}: {word}" for path, text in texts.items() for word in outside if word in text]
    assert not hits, hits
