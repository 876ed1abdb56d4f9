"""Invariants of the calibration-audit and operations parts of template.yaml (read as data)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from tests.template.test_template import (
    TEMPLATE,
    WRITE_ACTION,
    _as_list,
    _CfnLoader,
    _fn_props,
    _list_prefixes,
    _prefix_filter,
    _resources,
    _s3_events,
    _text,
    _training_notifications,
)
from virality.config import OUTCOMES_PREFIX, AuditSettings

pytestmark = pytest.mark.template


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(encoding="utf-8"), Loader=_CfnLoader)


def _policy_statements(props: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(unconditional statements, statements granted only under UseAutoRecalibrate)."""
    always, recal = [], []
    for policy in props["Policies"]:
        if "Fn::If" in policy:
            cond, yes, no = policy["Fn::If"]
            assert cond == "UseAutoRecalibrate" and no == {"Ref": "AWS::NoValue"}
            recal.extend(yes["Statement"])
        else:
            always.extend(policy["Statement"])
    return always, recal


def test_audit_runs_on_the_schedule_parameter(template):
    props = _fn_props(template, "AuditFunction")
    (event,) = props["Events"].values()
    assert event["Type"] == "Schedule"
    assert event["Properties"]["Schedule"] == {"Ref": "AuditSchedule"}
    assert template["Parameters"]["AuditSchedule"]["Default"] == "rate(1 day)"
    assert not _s3_events(props)
    env = props["Environment"]["Variables"]
    assert env["DATA_BUCKET"] == {"Ref": "DataBucket"} and env["OUTCOMES_PREFIX"] == OUTCOMES_PREFIX
    assert env["AUTO_RECALIBRATE"] == {"Ref": "AutoRecalibrate"}
    assert template["Parameters"]["AutoRecalibrate"]["Default"] == "false"
    assert template["Parameters"]["AuditWindowDays"]["Default"] == 7
    assert template["Parameters"]["AuditMinRows"]["Default"] == 200
    settings = AuditSettings.from_env({"AUTO_RECALIBRATE": "false", "CALIBRATION_ECE_THRESHOLD": "0.15"})
    assert settings.auto_recalibrate is False


def test_audit_failure_rules_match_retrain(template):
    audit, retrain = _fn_props(template, "AuditFunction"), _fn_props(template, "RetrainFunction")
    a, r = audit["EventInvokeConfig"], retrain["EventInvokeConfig"]
    assert a["MaximumRetryAttempts"] == r["MaximumRetryAttempts"] == 1
    assert a["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": ["AuditDeadLetterQueue", "Arn"]}
    assert audit["ReservedConcurrentExecutions"] == 1 and audit["RecursiveLoop"] == "Terminate"


def _conditional_on(st: dict[str, Any]) -> str | None:
    """The header a PutObject statement requires ("s3:if-none-match" / "s3:if-match"), else None."""
    null = st.get("Condition", {}).get("Null", {})
    (key,) = null or {None: None}
    return key if key and null[key] == "false" else None


def test_audit_iam_is_least_privilege(template):
    always, recal = _policy_statements(_fn_props(template, "AuditFunction"))
    for st in always:
        actions = _as_list(st["Action"])
        resources = [_text(r) for r in _as_list(st["Resource"])]
        if any(WRITE_ACTION.search(a) for a in actions):
            assert actions == ["s3:PutObject"] and resources == ["${ModelBucket.Arn}/models/audits/*"]
            assert _conditional_on(st) == "s3:if-none-match"        # write-once in IAM, not only in code
        elif "s3:ListBucket" in actions:
            assert resources in (["${DataBucket.Arn}"], ["${ModelBucket.Arn}"])
            assert _list_prefixes(st) == (["outcomes/*"] if resources == ["${DataBucket.Arn}"] else ["models/*"])
        else:
            assert set(actions) <= {"s3:GetObject", "s3:GetObjectVersion"}
            assert resources in (["${DataBucket.Arn}/outcomes/*"], ["${ModelBucket.Arn}/models/*"])
    # Only with recalibration on: what the release protocol needs, every write conditional.
    writes = {(_text(s["Resource"]), _conditional_on(s)) for s in recal if s["Action"] == "s3:PutObject"}
    assert writes == {("${ModelBucket.Arn}/models/*", "s3:if-none-match"),
                      ("${ModelBucket.Arn}/models/latest.json", "s3:if-match")}
    others = {(s["Action"], _text(s["Resource"])) for s in recal if s["Action"] != "s3:PutObject"}
    assert others == {("s3:GetObjectVersion", "${ModelBucket.Arn}/models/latest.json"),
                      ("s3:ListBucketVersions", "${ModelBucket.Arn}")}
    # Nothing may write to the data bucket.
    for st in always + recal:
        if any(WRITE_ACTION.search(a) for a in _as_list(st["Action"])):
            assert all("DataBucket" not in _text(r) for r in _as_list(st["Resource"]))


def test_outcome_uploads_cannot_match_the_retrain_trigger(template):
    (event,) = _training_notifications(template)
    prefix = _prefix_filter(event)
    assert not OUTCOMES_PREFIX.startswith(prefix) and not prefix.startswith(OUTCOMES_PREFIX)


def _alarm(template: dict[str, Any], name: str) -> dict[str, Any]:
    res = template["Resources"][name]
    assert res["Type"] == "AWS::CloudWatch::Alarm"
    props = res["Properties"]
    assert props["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    return props


def test_calibration_alarm_watches_the_audit_metric(template):
    props = _alarm(template, "CalibrationEceAlarm")
    assert (props["Namespace"], props["MetricName"]) == ("Virality", "CalibrationECE")
    assert props["Dimensions"] == [{"Name": "service", "Value": "virality-audit"}]
    env = _fn_props(template, "AuditFunction")["Environment"]["Variables"]
    assert env["POWERTOOLS_SERVICE_NAME"] == "virality-audit"
    assert props["Threshold"] == {"Ref": "CalibrationEceThreshold"} == env["CALIBRATION_ECE_THRESHOLD"]
    assert template["Parameters"]["CalibrationEceThreshold"]["Default"] == 0.15
    assert props["ComparisonOperator"] == "GreaterThanThreshold" and props["TreatMissingData"] == "notBreaching"


def test_operations_alarms_and_topic(template):
    assert _alarm(template, "Predict5xxAlarm")["MetricName"] == "5XXError"
    assert _alarm(template, "PredictLatencyAlarm")["ExtendedStatistic"] == "p99"
    for name, fn in (("RetrainErrorsAlarm", "RetrainFunction"), ("AuditErrorsAlarm", "AuditFunction")):
        props = _alarm(template, name)
        assert props["MetricName"] == "Errors" and props["Dimensions"][0]["Value"] == {"Ref": fn}
    for name, queue in (("RetrainDeadLetterAlarm", "RetrainDeadLetterQueue"),
                        ("AuditDeadLetterAlarm", "AuditDeadLetterQueue")):
        props = _alarm(template, name)
        assert props["MetricName"] == "ApproximateNumberOfMessagesVisible"
        assert props["Dimensions"][0]["Value"] == {"Fn::GetAtt": [queue, "QueueName"]}
    topic = template["Resources"]["AlarmTopic"]["Properties"]
    assert topic["KmsMasterKeyId"] == {"Ref": "AlarmTopicKey"}
    sub = template["Resources"]["AlarmEmailSubscription"]
    assert sub["Condition"] == "HasAlarmEmail" and sub["Properties"]["Endpoint"] == {"Ref": "AlarmEmail"}
    assert template["Parameters"]["AlarmEmail"]["Default"] == ""


def test_dashboard_shows_the_operations_and_audit_figures(template):
    (dash,) = _resources(template, "AWS::CloudWatch::Dashboard").values()
    body = dash["Properties"]["DashboardBody"]["Fn::Sub"][0]
    doc = json.loads(re.sub(r"\$\{[^}]+\}", "1", body))     # valid JSON once the !Sub variables are in
    assert len(doc["widgets"]) == 6
    for needle in ("PredictionsServed", "Latency", "5XXError", "Errors", "model_version", "CalibrationECE",
                   "OutcomeAccuracy", "TierMixPSI", "ApproximateNumberOfMessagesVisible"):
        assert needle in body, needle
