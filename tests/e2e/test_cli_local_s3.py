"""``virality versions|rollback --local-s3 URL`` against the local S3 server ``virality serve --local-s3`` runs."""

from __future__ import annotations

import pytest

from virality_dev.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_versions_and_rollback_reach_the_local_s3_by_url(capsys: pytest.CaptureFixture[str]) -> None:
    from virality.services.training import format_report, train_file
    from virality.store.s3 import ModelRegistry, Pointer
    from virality_dev.localapi import MODEL_BUCKET, LocalS3, patched_environ
    from virality_dev.synthetic import sample_csv

    with LocalS3([MODEL_BUCKET]) as s3:
        registry = ModelRegistry(MODEL_BUCKET, "models/", s3.client)
        versions = []
        for seed in (1, 2):
            artifact = train_file(sample_csv(500, seed), f"s{seed}.csv").artifact
            key, sha = registry.publish(artifact, format_report(artifact))
            state = registry.read_pointer()
            registry.write_pointer(Pointer(version=artifact.modelVersion, key=key, sha256=sha),
                                   state.etag if state else None)
            versions.append(artifact.modelVersion)
        # No endpoint or credentials in the environment: --local-s3 alone must reach the server.
        unset = dict.fromkeys(("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                               "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"))
        with patched_environ(unset):
            code, out, err = run(capsys, "versions", "--local-s3", s3.endpoint_url)
            assert code == 0, err
            assert out.splitlines() == [f"  {versions[0]}", f"* {versions[1]}"]
            code, out, err = run(capsys, "rollback", "--local-s3", s3.endpoint_url, "--version", versions[0])
            assert code == 0, err
        assert registry.read_pointer().pointer.version == versions[0]
