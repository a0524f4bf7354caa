"""The documentation: docstring examples run, the Sphinx build is clean, pages are complete."""
import doctest
import importlib
import os
import pkgutil
import re
import subprocess
import sys

import pytest

import resattn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
MODULES = sorted(m.name for m in pkgutil.iter_modules(resattn.__path__, "resattn."))
# Modules whose reference is the command line's --help, not an API page.
NO_API_PAGE = re.compile(r"resattn\.(_.*|cli.*)$")


# ----------------------------------------------------------------------------- doctests
@pytest.mark.parametrize("name", ["resattn"] + MODULES)
def test_docstring_examples(name):
    """Every ``>>>`` example in the package's docstrings gives the output it shows."""
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name and not err.name.startswith("resattn"):
            pytest.skip("%s needs the optional dependency %s" % (name, err.name))
        raise
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report = []
    for test in doctest.DocTestFinder(exclude_empty=True).find(module, name):
        runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, (
        "%s: docstring examples fail (a `>>>` line must run as shown; mark a usage sketch "
        "that cannot run here with `# doctest: +SKIP`, or write it as a `::` literal block)"
        ":\n%s" % (name, "".join(report)))


# ----------------------------------------------------------------------------- the Sphinx build
@pytest.fixture(scope="module")
def html(tmp_path_factory):
    """Build the docs as `make docs` does (-W: warnings are errors) into a temporary folder."""
    pytest.importorskip("sphinx", reason="the docs extra is not installed: pip install '.[docs]'")
    pytest.importorskip("myst_parser", reason="pip install '.[docs]'")
    out = tmp_path_factory.mktemp("html")
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-q",
           "-d", str(out / ".doctrees"), DOCS, str(out)]
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONWARNINGS="ignore::DeprecationWarning")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, "sphinx-build -W failed:\n%s\n%s" % (proc.stdout, proc.stderr)
    return out


def _text(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def test_docs_build_without_warnings(html):
    for page in ("index", "installation", "quickstart", "architecture", "zoo", "api/index",
                 "tutorials/index", "tutorials/custom_network", "tutorials/train_cifar10",
                 "tutorials/finetune", "tutorials/pytorch_weights", "tutorials/masks",
                 "tutorials/export_onnx", "tutorials/distributed"):
        assert (html / (page + ".html")).is_file(), page


def test_zoo_table_lists_every_registered_model(html):
    page = _text(html / "zoo.html")
    for name in resattn.list_models():
        assert ">%s<" % name in page, "%s missing from the zoo table" % name
    # A published accuracy appears with its source.
    assert "95.41%" in page and "PistonY/ResidualAttentionNetwork" in page
    assert any(resattn.model_config(name)["published"] for name in resattn.list_models())


def test_zoo_table_counts_are_the_profile(html):
    """The table's numbers are profile()'s, at each model's input size (spot check)."""
    page = _text(html / "zoo.html")
    for name in ("attention56", "attention92_cifar"):
        prof = resattn.profile(resattn.get_model(name), resattn.model_config(name)["input_size"])
        row = page[page.index(">%s<" % name):]
        row = row[:row.index("</tr>")]
        assert ">%.2f<" % (prof.params / 1e6) in row and ">%.3f<" % (prof.macs / 1e9) in row


def test_architecture_page_has_the_diagram(html):
    assert "architecture.png" in _text(html / "architecture.html")
    assert (html / "_images" / "architecture.png").is_file()


@pytest.mark.parametrize("name", [m for m in MODULES if not NO_API_PAGE.match(m)])
def test_every_public_module_has_an_api_page(html, name):
    page = html / "api" / (name.split(".", 1)[1] + ".html")
    assert page.is_file(), (
        "%s has no API page: add docs/api/%s.rst with\n\n%s\n%s\n\n.. automodule:: %s\n"
        "   :members:\n\nand list it in docs/api/index.rst" % (
            name, name.split(".", 1)[1], name, "=" * len(name), name))
    assert 'id="%s' % name in _text(page) or ("module-%s" % name) in _text(page)


# ----------------------------------------------------------------------------- runnable pages
def _python_blocks(path):
    return re.findall(r"^```python\n(.*?)^```", _text(path), flags=re.S | re.M)


def test_quickstart_runs_as_written(tmp_path, monkeypatch, capsys):
    """The quick start promises that its Python blocks run in order, as written."""
    blocks = _python_blocks(os.path.join(DOCS, "quickstart.md"))
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "quickstart"}
    for i, block in enumerate(blocks):
        exec(compile(block, "quickstart.md block %d" % (i + 1), "exec"), namespace)
    out = capsys.readouterr().out
    assert "(2, 10)" in out and "(1, 10)" in out and "stage3.module3" in out


@pytest.mark.parametrize("page", ["tutorials/custom_network.md", "tutorials/masks.md",
                                  "tutorials/pytorch_weights.md", "tutorials/finetune.md",
                                  "tutorials/export_onnx.md"])
def test_tutorial_snippets_compile(page):
    for i, block in enumerate(_python_blocks(os.path.join(DOCS, page))):
        compile(block, "%s block %d" % (page, i + 1), "exec")
