"""The ``python app.py`` process: node's compile cache, pipelined jsii loads, fast exit."""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from stacks import jsii_loads, synth_process
from tests.infra.conftest import REPO_ROOT, Synthesized, stack_template_files

NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not on PATH")


def _run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=REPO_ROOT,
        env=env or dict(os.environ),
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )


def _python(script: str) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-c", textwrap.dedent(script)])


def _node_env(preload: Path, cache: Path) -> dict[str, str]:
    environ = dict(os.environ, NODE_COMPILE_CACHE=str(cache))
    environ["NODE_OPTIONS"] = synth_process._node_option("--require", preload)
    return environ


def _stack_templates(outdir: Path, env_name: str) -> dict[str, dict[str, Any]]:
    files = stack_template_files(outdir, env_name)
    return {stack_id: json.loads(path.read_text()) for stack_id, path in files.items()}


def _cache_entries(cache: Path) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in cache.glob("v*/*")}


@pytest.mark.timeout(180)
def test_app_py_synthesizes_what_build_app_does_and_reuses_the_compile_cache(
    tmp_path: Path, synthesized: Synthesized
) -> None:
    cache = tmp_path / "node cache"
    env = dict(
        os.environ,
        CDK_CONTEXT_JSON=json.dumps({"env": "dev"}),
        NODE_COMPILE_CACHE=str(cache),
    )
    env.pop("NODE_OPTIONS", None)

    def synth(outdir: Path) -> subprocess.CompletedProcess[str]:
        return _run([sys.executable, str(REPO_ROOT / "app.py")], dict(env, CDK_OUTDIR=str(outdir)))

    first = synth(tmp_path / "first")
    assert first.returncode == 0, first.stderr
    assert _stack_templates(tmp_path / "first", "dev") == synthesized.templates["dev"]
    written = _cache_entries(cache)
    # aws-cdk-lib, cdk-nag and the jsii runtime: hundreds of modules, each cached once.
    assert len(written) > 300

    second = synth(tmp_path / "second")
    assert second.returncode == 0, second.stderr
    assert _stack_templates(tmp_path / "second", "dev") == synthesized.templates["dev"]
    # Every module's cache was accepted: a rejected one would have been written again.
    assert _cache_entries(cache) == written


@pytest.mark.timeout(120)
def test_prepare_sets_the_process_up_and_importing_the_app_makes_no_jsii_call() -> None:
    # A synth's first jsii call waits for node to load the assemblies; a call made at import
    # (a module-level Duration, Port or pseudo parameter) would make it wait early again.
    result = _python(
        """
        import gc, os, traceback
        from stacks import synth_process
        synth_process.prepare()
        assert not gc.isenabled()
        assert "node_compile_cache.js" in os.environ["NODE_OPTIONS"]
        from jsii._kernel.providers import process
        send = process._NodeProcess.send
        calls = []
        def recording_send(self, request, response_type):
            calls.append(type(request).__name__ + " " + traceback.format_stack()[-3].strip())
            return send(self, request, response_type)
        process._NodeProcess.send = recording_send
        import stacks.app
        print("\\n".join(calls) or "no calls")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "no calls"


@pytest.mark.timeout(120)
def test_a_failed_pipelined_load_is_raised_at_the_next_call() -> None:
    result = _python(
        """
        from stacks import jsii_loads
        assert jsii_loads.pipeline()
        from jsii._runtime import kernel
        kernel.load("missing-assembly", "1.0.0", "/nonexistent/missing-assembly.tgz")
        print("load returned")
        import aws_cdk
        print("imported")
        try:
            aws_cdk.Duration.minutes(1)
        except Exception as error:
            print("raised:", type(error).__name__, error)
        else:
            print("no error")
        """
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["load returned", "imported"]
    assert lines[2].startswith("raised: ")
    assert "missing-assembly.tgz" in lines[2]


def test_the_pipelining_is_written_for_the_pinned_jsii() -> None:
    # jsii_loads reaches into jsii's process provider: moving the pin means re-reading it.
    import jsii

    lock = (REPO_ROOT / "requirements" / "lock.txt").read_text().splitlines()
    assert f"jsii=={jsii_loads.JSII_VERSION}" in lock
    assert jsii.__version__ == jsii_loads.JSII_VERSION


def test_configure_node_adds_the_preload_once_and_keeps_what_was_set(tmp_path: Path) -> None:
    environ = {"NODE_OPTIONS": "--max-semi-space-size=32"}
    synth_process.configure_node(environ)
    synth_process.configure_node(environ)
    assert environ["NODE_COMPILE_CACHE"] == str(synth_process.default_compile_cache_dir(environ))
    preload = f'--require "{synth_process.COMPILE_CACHE_PRELOAD}"'
    assert environ["NODE_OPTIONS"] == f"--max-semi-space-size=32 {preload}"

    chosen = {"NODE_COMPILE_CACHE": str(tmp_path)}
    synth_process.configure_node(chosen)
    assert chosen["NODE_COMPILE_CACHE"] == str(tmp_path)


def test_the_default_cache_is_per_user_outside_the_checkout(tmp_path: Path) -> None:
    xdg = {"XDG_CACHE_HOME": str(tmp_path)}
    assert synth_process.default_compile_cache_dir(xdg) == tmp_path / "chatbot-cdk" / (
        "node-compile-cache"
    )
    home_cache = Path.home() / ".cache" / "chatbot-cdk" / "node-compile-cache"
    assert synth_process.default_compile_cache_dir({"XDG_CACHE_HOME": "relative/dir"}) == (
        home_cache
    )
    assert synth_process.default_compile_cache_dir({}) == home_cache
    assert not home_cache.is_relative_to(REPO_ROOT)


@needs_node
def test_node_accepts_the_preload_from_a_path_with_spaces(tmp_path: Path) -> None:
    preload = tmp_path / 'dir with "quotes" and spaces' / "node_compile_cache.js"
    preload.parent.mkdir()
    shutil.copy(synth_process.COMPILE_CACHE_PRELOAD, preload)
    result = _run(
        [str(NODE), "-e", "console.log(require('module').prototype._compile.name)"],
        _node_env(preload, tmp_path / "cache"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "compileWithCodeCache"


@needs_node
def test_cached_modules_run_as_node_runs_them(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "lib").mkdir(parents=True)
    (package / "main.js").write_text(
        textwrap.dedent(
            """\
            const lib = require('./lib/helper');
            const tool = require('./lib/tool');
            const path = require('path');
            console.log(JSON.stringify({
              helper: lib.describe(),
              tool: tool.name,
              resolved: path.relative(__dirname, require.resolve('./lib/helper')),
              sameCache: require.cache === require('module')._cache,
              main: require.main === module,
            }));
            require('./lib/loader')().then((esm) => console.log(esm.answer));
            """
        )
    )
    (package / "lib" / "helper.js").write_text(
        "exports.describe = () => `${require('path').basename(__dirname)}:${this === exports}`;\n"
    )
    (package / "lib" / "tool.js").write_text("#!/usr/bin/env node\nexports.name = 'tool';\n")
    (package / "lib" / "loader.js").write_text("module.exports = () => import('./esm.mjs');\n")
    (package / "lib" / "esm.mjs").write_text("export const answer = 42;\n")
    cache = tmp_path / "cache"
    environ = _node_env(synth_process.COMPILE_CACHE_PRELOAD, cache)

    def run() -> list[str]:
        result = _run([str(NODE), str(package / "main.js")], environ)
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    expected = [
        json.dumps(
            {
                "helper": "lib:true",
                "tool": "tool",
                "resolved": "lib/helper.js",
                "sameCache": True,
                "main": True,
            },
            separators=(",", ":"),
        ),
        "42",
    ]
    assert run() == expected
    written = _cache_entries(cache)
    # main.js, helper.js and tool.js; node compiles loader.js (import()) and the ES module.
    assert len(written) == 3
    assert run() == expected
    assert _cache_entries(cache) == written


@pytest.mark.timeout(60)
def test_exit_now_runs_the_exit_handlers_keeps_the_status_and_skips_the_teardown(
    tmp_path: Path,
) -> None:
    marker, torn_down = tmp_path / "handler-ran", tmp_path / "torn-down"
    result = _python(
        f"""
        import atexit, pathlib, sys
        from stacks import synth_process

        class Witness:  # freed by the interpreter's teardown, which sys.exit would run
            def __del__(self):
                pathlib.Path({str(torn_down)!r}).write_text("yes")

        witness = Witness()
        atexit.register(lambda: pathlib.Path({str(marker)!r}).write_text("yes"))
        print("buffered output", end="")
        sys.stderr.write("buffered error")
        synth_process.exit_now(3)
        """
    )
    assert result.returncode == 3
    assert result.stdout == "buffered output"
    assert result.stderr == "buffered error"
    assert marker.read_text() == "yes"
    assert not torn_down.exists()


def test_prepare_refuses_once_aws_cdk_is_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aws_cdk", sys.modules.get("aws_cdk") or object())
    with pytest.raises(RuntimeError, match="before aws_cdk is imported"):
        synth_process.prepare()
    assert gc.isenabled()
