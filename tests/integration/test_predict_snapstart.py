"""SnapStart hooks of the predict function.

The Lambda Python runtime provides ``snapshot_restore_py`` when SnapStart is on;
here a stand-in module records what the handler registers, then the hooks are
run the way the runtime would: before the snapshot (load the model so restored
environments start warm) and after a restore (re-check the pointer, so a
snapshot taken long ago never serves a model staler than the refresh interval).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.integration.helpers import call, version_id
from virality_dev.events import api_event
from virality_dev.handlers import load_handler, repo_root

ROOT = repo_root()


@pytest.fixture
def snapstart_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, dict[str, list[Callable[[], None]]]]]:
    hooks: dict[str, list[Callable[[], None]]] = {"before": [], "after": []}
    runtime = types.ModuleType("snapshot_restore_py")
    runtime.register_before_snapshot = hooks["before"].append  # type: ignore[attr-defined]
    runtime.register_after_restore = hooks["after"].append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", runtime)
    module = load_handler("predict")
    yield module, hooks
    module.reset()


def test_hooks_are_registered_with_the_runtime(snapstart_app: Any) -> None:
    _, hooks = snapstart_app
    assert len(hooks["before"]) == 1 and len(hooks["after"]) == 1


def test_snapshot_carries_the_model_and_a_restore_picks_up_a_newer_pointer(
        snapstart_app: Any, s3_recorder: Any, store: Any, model_env: Any, lambda_context: Any) -> None:
    app, hooks = snapstart_app
    # Given a published model and no refresh interval (a restored snapshot would otherwise never look)
    model_env()
    store.promote(version_id(1))
    # When the runtime takes the snapshot, the model is loaded into it
    hooks["before"][0]()
    assert app.provider().loaded.model.version == version_id(1)
    s3_recorder.take()
    # ... and a newer model is promoted while the snapshot sits in storage
    store.promote(version_id(2))
    # Then the after-restore hook re-checks the pointer and serves the new version at once
    hooks["after"][0]()
    assert "HeadObject" in s3_recorder.take()
    body = call(app, api_event("GET", "/model"), lambda_context).body
    assert body["modelVersion"] == version_id(2)


def test_restore_without_a_loaded_model_does_nothing(snapstart_app: Any, s3_recorder: Any, model_env: Any) -> None:
    app, hooks = snapstart_app
    model_env()
    hooks["after"][0]()             # no snapshot-time load happened: nothing to re-check
    assert app._provider is None and s3_recorder.take() == []


