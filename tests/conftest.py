"""Environment for every test suite: dummy AWS credentials and no model hub, set before imports."""

from __future__ import annotations

import os
from typing import Any

# Tests talk only to local servers. Forcing dummy credentials (rather than defaulting them) means
# a developer's real AWS credentials can never reach a request made by a test.
for variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
    os.environ.pop(variable, None)
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
# Models come from PyPI packages; nothing may be fetched from a hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
# No X-Ray daemon here: the front door's tracer stays off (and patches nothing).
os.environ["POWERTOOLS_TRACE_DISABLED"] = "true"
# One compute thread per process that runs a model (here and in every server a test starts):
# the suite runs on two xdist workers, and a torch process whose OpenMP threads wait by
# spinning for all cores slows the other worker's servers down more than it gains
# (measured: the whole suite 188 s with the default threads, 166 s with one).
os.environ.setdefault("OMP_NUM_THREADS", "1")


import pytest  # noqa: E402 - the environment above must be set before anything imports boto3

# Directories whose tests share one expensive session resource (a synth of every environment,
# the local stack): under pytest-xdist each stays on one worker, so the resource is built once.
# Other tests are grouped by module (module-scoped servers and loaded models).
_SHARED_BY_DIRECTORY = ("infra", "e2e")
# Modules of those directories that use none of the shared resource: their own groups.
_OWN_GROUP = ("e2e/test_stack_units.py", "e2e/test_stack_failure_paths.py")

# Groups that take longest (per `pytest --durations=0` on two workers), handed out first so
# that the two workers finish together instead of one starting a long group while the other
# idles. Only an order: a group missing here runs after these, in xdist's usual order.
_LONGEST_FIRST = (
    "e2e",
    "e2e/test_stack_failure_paths.py",
    "preflight/test_diff.py",
    "infra",
    "front_door/test_api.py",
    "customize/test_distributed.py",
    "container/test_server_scripted.py",
    "front_door/test_openapi_fuzz.py",
    "preflight/test_engine_args.py",
    "container/test_server_real_model.py",
    "front_door/test_failure_paths.py",
    "bench/test_gpu_serving_smoke.py",
    "customize/test_serving.py",
    "preflight/test_account.py",
    "local/test_sagemaker_emulator.py",
    "container/test_launcher.py",
    "customize/test_evaluate.py",
    "e2e/test_stack_units.py",
)


def group_of(nodeid: str) -> str:
    """The group of a test: its directory under tests/ if shared, else its module's path."""
    parts = nodeid.split("::", 1)[0].split("/")
    if parts[0] == "tests":
        parts = parts[1:]
    module = "/".join(parts)
    return parts[0] if parts[0] in _SHARED_BY_DIRECTORY and module not in _OWN_GROUP else module


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup``, grouping by :func:`group_of` and handing out long groups first.

    xdist's own loadgroup scheduler reads the group from a suffix its worker appends to each
    node id, which has no effect on pytest 9.2's structured node ids: every test would be its
    own group (pytest-dev/pytest-xdist#1386), each worker would start every module's servers,
    the local stack and the synth. This scheduler derives the group from the node id instead.
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    rank = {group: n for n, group in enumerate(_LONGEST_FIRST)}

    class GroupScheduling(LoadScopeScheduling):  # type: ignore[misc]
        _ordered = False

        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

        def _assign_work_unit(self, node: Any) -> None:
            if not self._ordered:
                self._ordered = True
                ordered = sorted(self.workqueue.items(), key=lambda kv: rank.get(kv[0], len(rank)))
                self.workqueue.clear()
                self.workqueue.update(ordered)
            super()._assign_work_unit(node)

    return GroupScheduling(config, log)
