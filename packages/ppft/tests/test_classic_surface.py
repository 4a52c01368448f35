"""`import ppft` and `import pp` give ppft 1.7's names; the retired internals say what replaced them."""

from __future__ import annotations

import importlib
import importlib.metadata
import sys

import pytest

import ppft
import ppft_client

CLASSIC_NAMES = (
    "Server",
    "Template",
    "DestroyedServerError",
    "_Task",
    "_Worker",
    "_RWorker",
    "_Statistics",
    "_USE_SUBPROCESS",
    "__version__",
    "copyright",
    "license",
    "citation",
    "transport",
    "auto",
    "common",
    "worker",
)


@pytest.mark.parametrize("name", CLASSIC_NAMES)
def test_ppft_has_every_classic_name(name: str) -> None:
    assert hasattr(ppft, name)


@pytest.mark.parametrize("name", CLASSIC_NAMES)
def test_pp_gives_the_same_objects_as_ppft(name: str) -> None:
    import pp

    assert getattr(pp, name) is getattr(ppft, name)


@pytest.mark.parametrize("module", ["common", "transport", "auto", "worker", "server", "tests"])
def test_pp_submodules_are_ppft_submodules(module: str) -> None:
    mirrored = importlib.import_module(f"pp.{module}")
    assert mirrored is importlib.import_module(f"ppft.{module}")
    assert sys.modules[f"pp.{module}"] is mirrored


def test_version_is_a_release_that_meets_pathos_requirement() -> None:
    parts = tuple(int(p) for p in ppft.__version__.split("."))
    assert parts >= (2, 0, 0) and len(parts) == 3  # no pre-release: pip prefers it to ppft 1.7.8
    assert importlib.metadata.version("ppft") == ppft.__version__


def test_task_is_the_class_submit_returns(make_server) -> None:
    server = make_server(1)
    job = server.submit(abs, (-3,))
    assert type(job) is ppft._Task and job() == 3


def test_statistics_is_the_class_of_get_stats_values(make_server) -> None:
    stats = make_server(1).get_stats()
    assert isinstance(stats["local"], ppft._Statistics)
    assert ppft._Statistics is ppft_client.Statistics


def test_use_subprocess_is_true() -> None:
    assert ppft._USE_SUBPROCESS is True


def test_copyright_is_text_naming_the_original_authors() -> None:
    assert isinstance(ppft.copyright, str) and "Vitalii Vanovschi" in ppft.copyright


def test_license_prints_and_returns_the_bsd_text(capsys) -> None:
    text = ppft.license()
    assert "Redistribution and use in source and binary forms" in text
    assert capsys.readouterr().out == text


def test_citation_prints_and_returns_the_references(capsys) -> None:
    text = ppft.citation()
    assert "Building a framework for predictive science" in text
    assert capsys.readouterr().out == text


@pytest.mark.parametrize(
    ("factory", "replacement"),
    [
        (lambda: ppft._Worker(False, 5), "WorkerPool"),
        (lambda: ppft._RWorker("127.0.0.1", 60000), "RemoteNode"),
        (lambda: ppft.transport.PipeTransport(None, None), "ppft_protocol"),
        (lambda: ppft.transport.CSocketTransport(None, 10), "ppft_protocol"),
        (lambda: ppft.auto.Discover(None), "Discovery"),
        (lambda: ppft.worker._WorkerProcess(), "ppft_worker"),
        (lambda: ppft.worker.preprocess(b""), "ppft_worker"),
    ],
)
def test_retired_internal_raises_naming_its_replacement(factory, replacement: str) -> None:
    with pytest.raises(ppft.RetiredError, match=replacement) as info:
        factory()
    assert isinstance(info.value, ppft.PPFTError) and isinstance(info.value, NotImplementedError)


def test_retired_classes_document_what_replaced_them() -> None:
    for cls in (ppft._Worker, ppft._RWorker, ppft.transport.SocketTransport, ppft.auto.Discover):
        assert cls.__doc__ and "Replaced by" in cls.__doc__


def test_ppserver_comes_with_the_meta_package_from_ppft_server_alone() -> None:
    """`pip install ppft` gives `ppserver` (ppft needs ppft-server, which installs it), and `pip uninstall
    ppft` cannot take it away from a ppft-server user: one package owns the command."""
    own = importlib.metadata.distribution("ppft").entry_points.select(group="console_scripts")
    assert "ppserver" not in {ep.name for ep in own}
    requires = importlib.metadata.requires("ppft") or []
    assert any(req.startswith("ppft-server==") for req in requires), requires
    server = importlib.metadata.distribution("ppft-server").entry_points.select(group="console_scripts")
    assert {ep.name: ep.value for ep in server}["ppserver"] == "ppft_server.cli:main"
