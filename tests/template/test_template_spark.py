"""The Spark (EMR Serverless) part of template.yaml: off by default, pinned, least privilege."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.template.test_template import TEMPLATE, _CfnLoader
from virality.services.sparkjob import DEFAULT_SPARK_MIN_BYTES

pytestmark = pytest.mark.template

SPARK_RESOURCES = {"SparkApplication", "SparkJobRole", "RetrainStartsSparkJobsPolicy", "SparkJobFailuresLogGroup",
                   "SparkJobFailuresLogPolicy", "SparkJobFailedRule", "SparkJobFailedMetric"}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(encoding="utf-8"), Loader=_CfnLoader)


def _res(template: dict[str, Any], name: str) -> dict[str, Any]:
    return template["Resources"][name]


def test_spark_is_off_by_default_and_every_spark_resource_is_conditional(template: dict[str, Any]) -> None:
    assert template["Parameters"]["UseSpark"]["Default"] == "false"
    assert template["Conditions"]["EnableSpark"] == {"Fn::Equals": [{"Ref": "UseSpark"}, "true"]}
    for name in SPARK_RESOURCES:
        assert _res(template, name).get("Condition") == "EnableSpark", name
    assert int(template["Parameters"]["SparkMinBytes"]["Default"]) == DEFAULT_SPARK_MIN_BYTES


def test_the_application_is_pinned_to_the_local_spark_and_bounded(template: dict[str, Any]) -> None:
    import pyspark

    props = _res(template, "SparkApplication")["Properties"]
    assert props["Type"] == "Spark"
    # emr-spark-8.0.0 ships Spark 4.0.2: the tests run the same minor version
    assert props["ReleaseLabel"] == "emr-spark-8.0.0" and pyspark.__version__.startswith("4.0.")
    assert props["AutoStartConfiguration"]["Enabled"] is True
    assert props["AutoStopConfiguration"]["Enabled"] is True
    assert props["MaximumCapacity"] == {"Cpu": {"Ref": "SparkMaxCpu"}, "Memory": {"Ref": "SparkMaxMemory"}}


def test_the_job_role_reads_uploads_and_code_and_writes_only_models_and_logs(template: dict[str, Any]) -> None:
    role = _res(template, "SparkJobRole")["Properties"]
    trust = role["AssumeRolePolicyDocument"]["Statement"]
    assert [s["Principal"]["Service"] for s in trust] == ["emr-serverless.amazonaws.com"]
    statements = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    for st in statements:
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        assert all("*" not in a for a in actions), st
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        assert all(r != "*" for r in resources), st
        if "s3:PutObject" in actions:
            texts = [r["Fn::Sub"] for r in resources]
            assert texts in (["${ModelBucket.Arn}/models/*"], ["${ModelBucket.Arn}/models/latest.json"],
                             ["${DataBucket.Arn}/emr/logs/*"]), st
            if texts[0].startswith("${ModelBucket"):
                # as for the retrain function: only conditional writes (write-once / compare-and-swap)
                assert set(st["Condition"]["Null"]) <= {"s3:if-none-match", "s3:if-match"}, st


def test_the_retrain_function_may_only_start_runs_and_pass_the_job_role(template: dict[str, Any]) -> None:
    policy = _res(template, "RetrainStartsSparkJobsPolicy")["Properties"]
    assert policy["Roles"] == [{"Ref": "RetrainFunctionRole"}]
    by_action = {s["Action"]: s for s in policy["PolicyDocument"]["Statement"]}
    assert set(by_action) == {"emr-serverless:StartJobRun", "iam:PassRole"}
    assert by_action["emr-serverless:StartJobRun"]["Resource"] == {"Fn::GetAtt": ["SparkApplication", "Arn"]}
    assert by_action["iam:PassRole"]["Condition"] == {
        "StringEquals": {"iam:PassedToService": "emr-serverless.amazonaws.com"}}


def test_failed_job_runs_are_logged_and_counted(template: dict[str, Any]) -> None:
    rule = _res(template, "SparkJobFailedRule")["Properties"]
    pattern = rule["EventPattern"]
    assert pattern["source"] == ["aws.emr-serverless"]
    assert pattern["detail-type"] == ["EMR Serverless Job Run State Change"]
    assert pattern["detail"]["applicationId"] == [{"Ref": "SparkApplication"}]
    assert "FAILED" in pattern["detail"]["state"]
    assert rule["Targets"][0]["Arn"] == {"Fn::GetAtt": ["SparkJobFailuresLogGroup", "Arn"]}
    metric = _res(template, "SparkJobFailedMetric")["Properties"]
    assert metric["LogGroupName"] == {"Ref": "SparkJobFailuresLogGroup"}
    assert '$.detail.state = "FAILED"' in metric["FilterPattern"]
    assert metric["MetricTransformations"][0]["MetricNamespace"] == "Virality"
