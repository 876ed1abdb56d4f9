"""Invariants of template.yaml that the code relies on.

These read the SAM template as data (no AWS, no SAM CLI): handlers exist,
environment variable names match the settings models, the retrain trigger
(S3 -> SQS -> Lambda, partial batch responses) fires on training-data/ of the
data bucket only and cannot fire on the retrain function's own writes, predict cannot write, the
buckets are locked down, and the layer is built with precompiled bytecode.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from virality.config import AuditSettings, PredictSettings, RetrainSettings
from virality.services.sparkjob import SparkSettings

pytestmark = pytest.mark.template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"

SETTINGS = {"PredictFunction": PredictSettings, "RetrainFunction": RetrainSettings, "AuditFunction": AuditSettings}
# Settings models a function reads besides its own (the retrain function's Spark routing).
EXTRA_SETTINGS: dict[str, tuple[Any, ...]] = {"RetrainFunction": (SparkSettings,)}
# Names a function may set besides its settings: Powertools' own variables
# (prefix) and a few standard ones read by the runtime or libraries.
ALLOWED_EXTRA_ENV = {"AWS_LAMBDA_EXEC_WRAPPER", "PYTHONWARNINGS", "TZ"}
WRITE_ACTION = re.compile(r"(Put|Delete|Create|Update|Write|Restore|Replicate|Abort|Copy|Tagging|Acl)", re.I)


# --------------------------------------------------------------------------
# Loading: CloudFormation short-form tags become their long form.
# --------------------------------------------------------------------------
class _CfnLoader(yaml.SafeLoader):
    pass


def _construct_tag(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    if tag_suffix == "Condition":
        return {"Condition": value}
    return {f"Fn::{tag_suffix}": value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    assert TEMPLATE.is_file(), "template.yaml is missing"
    doc = yaml.load(TEMPLATE.read_text(encoding="utf-8"), Loader=_CfnLoader)
    assert doc["Transform"] == "AWS::Serverless-2016-10-31"
    return doc


def _resources(template: dict[str, Any], rtype: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in template["Resources"].items() if res["Type"] == rtype}


def _functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return _resources(template, "AWS::Serverless::Function")


def _fn_props(template: dict[str, Any], name: str) -> dict[str, Any]:
    """Function properties with the Globals applied (environment merged)."""
    glob = template.get("Globals", {}).get("Function", {})
    props = {**glob, **template["Resources"][name]["Properties"]}
    env = {
        **glob.get("Environment", {}).get("Variables", {}),
        **template["Resources"][name]["Properties"].get("Environment", {}).get("Variables", {}),
    }
    props["Environment"] = {"Variables": env}
    return props


def _statements(props: dict[str, Any]) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = []
    for policy in props.get("Policies", []):
        if isinstance(policy, dict) and "Fn::If" in policy:     # a conditional policy: check every branch
            branches = [b for b in policy["Fn::If"][1:] if not (isinstance(b, dict) and b.get("Ref") == "AWS::NoValue")]
            statements.extend(st for b in branches for st in _statements({"Policies": [b]}))
            continue
        assert isinstance(policy, dict) and "Statement" in policy, (
            f"only inline policy statements are allowed (no managed policies / SAM templates): {policy!r}"
        )
        statements.extend(policy["Statement"])
    return statements


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _text(value: Any) -> str:
    """A resource expression as comparable text (the Sub template or Ref/GetAtt)."""
    if isinstance(value, str):
        return value
    if "Fn::Sub" in value:
        sub = value["Fn::Sub"]
        return sub if isinstance(sub, str) else sub[0]
    if "Fn::GetAtt" in value:
        return "${" + ".".join(value["Fn::GetAtt"]) + "}"
    if "Ref" in value:
        return "${" + value["Ref"] + "}"
    raise AssertionError(f"unexpected resource expression {value!r}")


def _resolve(template: dict[str, Any], value: Any) -> str:
    """Environment value as a string: parameters take their default, resources a placeholder."""
    if isinstance(value, dict) and "Fn::If" in value:
        # Conditions are off by default (UseSpark=false): the false branch is what deploys.
        return _resolve(template, value["Fn::If"][2])
    if isinstance(value, dict) and "Ref" in value:
        param = template.get("Parameters", {}).get(value["Ref"])
        return str(param["Default"]) if param is not None else f"resolved-{value['Ref'].lower()}"
    if isinstance(value, dict) and "Fn::Sub" in value:     # a constructed name (DATA_BUCKET)
        return "resolved-" + _text(value).replace("${", "").replace("}", "").replace("::", "-").lower()
    assert not isinstance(value, (dict, list)), f"unsupported environment value {value!r}"
    return str(value)


def _list_prefixes(statement: dict[str, Any]) -> list[str]:
    """The s3:prefix values a ListBucket statement is limited to."""
    conditions = statement.get("Condition", {})
    for operator in ("StringLike", "StringLikeIfExists", "StringEquals", "StringEqualsIfExists"):
        if "s3:prefix" in conditions.get(operator, {}):
            return _as_list(conditions[operator]["s3:prefix"])
    raise AssertionError(f"s3:ListBucket without an s3:prefix condition: {statement!r}")


def _data_bucket_name_template(template: dict[str, Any]) -> str:
    return _text(template["Resources"]["DataBucket"]["Properties"]["BucketName"])


# --------------------------------------------------------------------------
# Functions
# --------------------------------------------------------------------------
def test_expected_functions(template):
    assert set(_functions(template)) == set(SETTINGS)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_handler_points_at_existing_lambda_handler(template, name):
    props = _fn_props(template, name)
    code_dir = ROOT / props["CodeUri"]
    module, _, func = props["Handler"].rpartition(".")
    source = code_dir / (module.replace(".", "/") + ".py")
    assert source.is_file(), f"{name}: Handler {props['Handler']} needs {source.relative_to(ROOT)}"
    text = source.read_text(encoding="utf-8")
    assert re.search(rf"^(async\s+)?def {func}\s*\(|^{func}\s*[:=]", text, re.M), (
        f"{name}: {source.relative_to(ROOT)} does not define {func}"
    )
    assert props["Runtime"] == "python3.12"


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_functions_have_no_dependencies_of_their_own(template, name):
    req = ROOT / _fn_props(template, name)["CodeUri"] / "requirements.txt"
    if req.exists():
        lines = [ln.strip() for ln in req.read_text(encoding="utf-8").splitlines()]
        assert [ln for ln in lines if ln and not ln.startswith("#")] == [], "dependencies belong in the layer"


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_environment_names_match_settings(template, name):
    settings = SETTINGS[name]
    env = _fn_props(template, name)["Environment"]["Variables"]
    known = set(settings.env_names()).union(*(extra.env_names() for extra in EXTRA_SETTINGS.get(name, ())))
    unknown = {
        k for k in env if k not in known and not k.startswith("POWERTOOLS_") and k not in ALLOWED_EXTRA_ENV
    }
    assert not unknown, f"{name} sets variables {settings.__name__} does not read: {sorted(unknown)}"
    assert env.get("MODEL_BUCKET") == {"Ref": "ModelBucket"}
    assert "POWERTOOLS_SERVICE_NAME" in env


def test_required_settings_are_set(template):
    predict = _fn_props(template, "PredictFunction")["Environment"]["Variables"]
    retrain = _fn_props(template, "RetrainFunction")["Environment"]["Variables"]
    assert {"MODEL_BUCKET", "MODEL_PREFIX", "MODEL_REFRESH_SECONDS", "MAX_BATCH", "MAX_BODY_BYTES"} <= set(
        predict
    )
    assert {"MODEL_BUCKET", "MODEL_PREFIX", "TRAINING_PREFIX", "MAX_TRAINING_BYTES"} <= set(retrain)
    assert predict["MODEL_PREFIX"] == retrain["MODEL_PREFIX"]


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_template_defaults_are_valid_settings(template, name):
    env = _fn_props(template, name)["Environment"]["Variables"]
    values = {k: _resolve(template, v) for k, v in env.items()}
    settings = SETTINGS[name].from_env(values)  # raises ConfigurationError when invalid
    for extra in EXTRA_SETTINGS.get(name, ()):
        extra.from_env(values)
    assert settings.model_bucket == "resolved-modelbucket"


# --------------------------------------------------------------------------
# Retrain trigger vs. retrain writes
# --------------------------------------------------------------------------
def _s3_events(props: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["Properties"] for e in props.get("Events", {}).values() if e["Type"] == "S3"]


def _training_notifications(template: dict[str, Any]) -> list[dict[str, Any]]:
    """DataBucket's queue notifications (the retrain trigger: S3 -> RetrainQueue -> RetrainFunction)."""
    return template["Resources"]["DataBucket"]["Properties"]["NotificationConfiguration"]["QueueConfigurations"]


def _sqs_events(props: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["Properties"] for e in props.get("Events", {}).values() if e["Type"] == "SQS"]


def _queue_policy(template: dict[str, Any], queue: str) -> dict[str, Any]:
    (policy,) = [p["Properties"] for p in _resources(template, "AWS::SQS::QueuePolicy").values()
                 if p["Properties"]["Queues"] == [{"Ref": queue}]]
    return policy["PolicyDocument"]


def _prefix_filter(event: dict[str, Any]) -> str:
    rules = event["Filter"]["S3Key"]["Rules"]
    prefixes = [r["Value"] for r in rules if r["Name"].lower() == "prefix"]
    assert len(prefixes) == 1, "the trigger needs exactly one prefix rule"
    return prefixes[0]


def test_retrain_trigger_is_the_training_prefix_of_the_data_bucket(template):
    props = _fn_props(template, "RetrainFunction")
    # The data bucket notifies the training queue of training-data/ only (not outcomes/, emr/ or models/) ...
    (event,) = _training_notifications(template)
    assert event["Queue"] == {"Fn::GetAtt": ["RetrainQueue", "Arn"]}
    assert _as_list(event["Event"]) == ["s3:ObjectCreated:*"]
    prefix = _prefix_filter(event)
    assert prefix == "training-data/"
    notification = template["Resources"]["DataBucket"]["Properties"]["NotificationConfiguration"]
    assert set(notification) == {"QueueConfigurations"}, "no direct Lambda or SNS notification besides the queue"
    env = props["Environment"]["Variables"]
    assert RetrainSettings.from_env({"TRAINING_PREFIX": env["TRAINING_PREFIX"]}).training_prefix == prefix
    # ... and no function is triggered by S3 directly any more.
    for name in _functions(template):
        assert not _s3_events(_fn_props(template, name)), name


def test_retrain_trigger_cannot_match_its_own_writes(template):
    props = _fn_props(template, "RetrainFunction")
    (event,) = _training_notifications(template)
    trigger_prefix = _prefix_filter(event)
    env = props["Environment"]["Variables"]
    # Writes go to another bucket resource than the one that notifies ...
    assert env["MODEL_BUCKET"] == {"Ref": "ModelBucket"}
    assert "NotificationConfiguration" not in template["Resources"]["ModelBucket"]["Properties"]
    # ... and even in one bucket neither prefix would contain the other.
    model_prefix = RetrainSettings.from_env({"MODEL_PREFIX": env["MODEL_PREFIX"]}).model_prefix
    assert not model_prefix.startswith(trigger_prefix) and not trigger_prefix.startswith(model_prefix)
    # Every permission to write is on the model bucket's model prefix, never on the data bucket.
    data_bucket = _data_bucket_name_template(template)
    for st in _statements(props):
        actions = _as_list(st["Action"])
        if st["Effect"] == "Allow" and any(WRITE_ACTION.search(a) for a in actions):
            for res in _as_list(st["Resource"]):
                text = _text(res)
                assert text in ("${ModelBucket.Arn}/models/*", "${ModelBucket.Arn}/models/latest.json"), (
                    f"write permission outside models/: {text}")
                assert data_bucket.split(":::")[-1] not in text
    assert props["RecursiveLoop"] == "Terminate"


def test_retrain_is_triggered_by_the_training_queue_with_partial_batch_responses(template):
    props = _fn_props(template, "RetrainFunction")
    # The function's only trigger is the queue the data bucket notifies.
    assert [e["Type"] for e in props["Events"].values()] == ["SQS"]
    (event,) = _sqs_events(props)
    assert event["Queue"] == {"Fn::GetAtt": ["RetrainQueue", "Arn"]}
    assert _training_notifications(template)[0]["Queue"] == event["Queue"]
    # Without ReportBatchItemFailures Lambda ignores the handler's batchItemFailures and deletes a failed message.
    assert event["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    # One upload per invocation: a timeout or out-of-memory cannot be reported per item.
    assert event["BatchSize"] == 1
    assert "MaximumBatchingWindowInSeconds" not in event and event.get("Enabled", True) is True


def test_training_queue_redrives_to_the_alarmed_dead_letter_queue(template):
    props = _fn_props(template, "RetrainFunction")
    queue = template["Resources"]["RetrainQueue"]["Properties"]
    # AWS: visibility timeout >= 6 x the function timeout (plus any batching window).
    assert queue["VisibilityTimeout"] >= 6 * props["Timeout"]
    assert queue["VisibilityTimeout"] <= 43200                 # the SQS maximum
    redrive = queue["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["RetrainDeadLetterQueue", "Arn"]}
    assert 5 <= redrive["maxReceiveCount"] <= 10               # >= 5 for Lambda pollers, bounded retries
    dlq = template["Resources"]["RetrainDeadLetterQueue"]["Properties"]
    # A redriven message keeps its first enqueue time: the DLQ must keep messages longer than the source.
    assert dlq["MessageRetentionPeriod"] > queue.get("MessageRetentionPeriod", 345600)
    # Encrypted at rest, and not with aws/sqs (S3 cannot send to a queue under the AWS managed key).
    assert queue.get("SqsManagedSseEnabled") is True and "KmsMasterKeyId" not in queue
    # The dead-letter alarm and the async on-failure destination watch / use that same queue.
    alarm = template["Resources"]["RetrainDeadLetterAlarm"]["Properties"]
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["RetrainDeadLetterQueue",
                                                                                   "QueueName"]}}]
    assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible" and alarm["Threshold"] == 0
    on_failure = props["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]["Destination"]
    assert on_failure == redrive["deadLetterTargetArn"]


def test_training_queue_policy_admits_only_the_data_bucket(template):
    document = _queue_policy(template, "RetrainQueue")
    allows = [st for st in document["Statement"] if st["Effect"] == "Allow"]
    (allow,) = allows
    assert allow["Principal"] == {"Service": "s3.amazonaws.com"}
    assert _as_list(allow["Action"]) == ["sqs:SendMessage"]
    assert allow["Resource"] == {"Fn::GetAtt": ["RetrainQueue", "Arn"]}
    condition = allow["Condition"]
    # The data bucket's ARN from its name pattern (exactly DataBucket's BucketName), and this account.
    assert _text(condition["ArnLike"]["aws:SourceArn"]) == (
        "arn:${AWS::Partition}:s3:::" + _data_bucket_name_template(template))
    assert condition["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}
    # No reference to DataBucket (it depends on this policy: S3 validates the destination on creation).
    text = repr(document)
    assert "{'Ref': 'DataBucket'}" not in text and "['DataBucket'" not in text and "${DataBucket" not in text
    depends = _as_list(template["Resources"]["DataBucket"].get("DependsOn", []))
    assert "RetrainQueuePolicy" in depends
    denies = [st for st in document["Statement"] if st["Effect"] == "Deny"]
    assert any(st.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false" for st in denies)


def test_retrain_can_poll_only_the_training_queue(template):
    # SAM's SQS event attaches AWSLambdaSQSQueueExecutionRole (Resource "*"): a deny must narrow it.
    statements = _statements(_fn_props(template, "RetrainFunction"))
    (deny,) = [st for st in statements if st["Effect"] == "Deny"]
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"} <= set(_as_list(deny["Action"]))
    assert deny["NotResource"] == {"Fn::GetAtt": ["RetrainQueue", "Arn"]} and "Resource" not in deny
    # Nothing else in the role may touch SQS but the dead-letter queue SAM grants for the destination.
    for st in statements:
        if st["Effect"] == "Allow":
            assert not [a for a in _as_list(st["Action"]) if a.startswith("sqs:")], st


# --------------------------------------------------------------------------
# IAM
# --------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_no_wildcard_actions_or_resources(template, name):
    props = _fn_props(template, name)
    assert "Role" not in props, "functions use SAM-generated roles built from their Policies"
    for st in _statements(props):
        for action in _as_list(st["Action"]):
            assert "*" not in action, f"{name}: wildcard action {action}"
        assert "NotResource" not in st or st["Effect"] == "Deny", f"{name}: Allow with NotResource"
        for res in _as_list(st.get("Resource", st.get("NotResource"))):
            text = _text(res)
            assert text != "*" and not text.endswith(":::*"), f"{name}: wildcard resource {text}"


def test_predict_can_only_read_models(template):
    props = _fn_props(template, "PredictFunction")
    statements = _statements(props)
    assert statements, "predict needs read access to the model prefix"
    for st in statements:
        assert st["Effect"] == "Allow"
        actions = _as_list(st["Action"])
        assert not [a for a in actions if WRITE_ACTION.search(a)], f"predict may not write: {actions}"
        assert set(actions) <= {"s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket"}
        for res in _as_list(st["Resource"]):
            text = _text(res)
            if "s3:ListBucket" in actions:
                assert actions == ["s3:ListBucket"] and text == "${ModelBucket.Arn}"
                assert _list_prefixes(st) == ["models/*"]
            else:
                assert text == "${ModelBucket.Arn}/models/*"
    assert "EventInvokeConfig" not in props


def test_retrain_permissions_are_scoped(template):
    props = _fn_props(template, "RetrainFunction")
    by_resource: dict[str, set[str]] = {}
    allows = [st for st in _statements(props) if st["Effect"] == "Allow"]
    denies = [st for st in _statements(props) if st["Effect"] != "Allow"]
    assert [st["Sid"] for st in denies] == ["PollOnlyTheTrainingQueue"]
    for st in allows:
        for res in _as_list(st["Resource"]):
            by_resource.setdefault(_text(res), set()).update(_as_list(st["Action"]))
        if "s3:ListBucket" in _as_list(st["Action"]):
            assert _list_prefixes(st) == ["models/*"]
    data = _data_bucket_name_template(template).replace("arn:${AWS::Partition}:s3:::", "")
    training = f"arn:${{AWS::Partition}}:s3:::{data}/training-data/*"
    assert by_resource == {
        training: {"s3:GetObject", "s3:GetObjectVersion"},
        "${ModelBucket.Arn}/models/*": {"s3:GetObject", "s3:PutObject"},
        "${ModelBucket.Arn}/models/latest.json": {"s3:PutObject", "s3:GetObjectVersion"},
        "${ModelBucket.Arn}": {"s3:ListBucket", "s3:ListBucketVersions"},
    }


def test_retrain_writes_are_conditional_in_iam(template):
    # Write-once in IAM: PutObject under models/ only with If-None-Match; the pointer also with If-Match.
    puts = [st for st in _statements(_fn_props(template, "RetrainFunction")) if "s3:PutObject" in _as_list(st["Action"])]
    by_resource = {_text(r): st.get("Condition") for st in puts for r in _as_list(st["Resource"])}
    assert by_resource == {
        "${ModelBucket.Arn}/models/*": {"Null": {"s3:if-none-match": "false"}},
        "${ModelBucket.Arn}/models/latest.json": {"Null": {"s3:if-match": "false"}},
    }
    for st in _statements(_fn_props(template, "RetrainFunction")):
        assert not {"s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObjectAcl"} & set(_as_list(st["Action"]))
        if "s3:ListBucketVersions" in _as_list(st["Action"]):
            assert st["Condition"] == {"StringLike": {"s3:prefix": ["models/latest.json"]}}


def test_retrain_refuses_foreign_buckets_by_configuration(template):
    env = _fn_props(template, "RetrainFunction")["Environment"]["Variables"]
    assert _text(env["DATA_BUCKET"]) == _data_bucket_name_template(template)


def test_retrain_limits_and_failure_destination(template):
    props = _fn_props(template, "RetrainFunction")
    assert props["Timeout"] == 900
    assert int(_resolve(template, props["MemorySize"])) >= 3008     # a literal or the RetrainMemorySize default
    # Concurrency is capped by the SQS event source, not by a reservation (which would throttle the poller
    # and push messages towards the dead-letter queue).
    assert "ReservedConcurrentExecutions" not in props
    (event,) = _sqs_events(props)
    assert event["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "RetrainMaxConcurrency"}
    param = template["Parameters"]["RetrainMaxConcurrency"]
    assert 2 <= param["MinValue"] <= param["Default"] <= param["MaxValue"] <= 1000     # SQS accepts 2..1000
    on_failure = props["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]
    assert on_failure["Type"] == "SQS"
    queue = on_failure["Destination"]["Fn::GetAtt"][0]
    queue_props = template["Resources"][queue]["Properties"]
    assert queue_props.get("KmsMasterKeyId") or queue_props.get("SqsManagedSseEnabled")


# --------------------------------------------------------------------------
# Buckets
# --------------------------------------------------------------------------
def test_buckets_are_locked_down(template):
    buckets = _resources(template, "AWS::S3::Bucket")
    assert {"DataBucket", "ModelBucket"} <= set(buckets)
    policies = {
        p["Properties"]["Bucket"]["Ref"]: p["Properties"]["PolicyDocument"]
        for p in _resources(template, "AWS::S3::BucketPolicy").values()
    }
    for name, bucket in buckets.items():
        props = bucket["Properties"]
        assert props["VersioningConfiguration"]["Status"] == "Enabled", name
        sse = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
            "ServerSideEncryptionByDefault"
        ]
        assert sse["SSEAlgorithm"] in {"AES256", "aws:kms", "aws:kms:dsse"}, name
        pab = props["PublicAccessBlockConfiguration"]
        assert all(
            pab[k] is True
            for k in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets")
        ), name
        rules = props["LifecycleConfiguration"]["Rules"]
        assert any("NoncurrentVersionExpiration" in r for r in rules), name
        denies = [
            st
            for st in policies[name]["Statement"]
            if st["Effect"] == "Deny"
            and st.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
        ]
        assert denies, f"{name}: no TLS-only policy"
        covered = {_text(r) for st in denies for r in _as_list(st["Resource"])}
        assert {f"${{{name}.Arn}}", f"${{{name}.Arn}}/*"} <= covered, name


def test_data_bucket_name_is_computed_not_referenced(template):
    # The retrain role must not !Ref the bucket that notifies it (dependency cycle).
    name = _data_bucket_name_template(template)
    assert "${StackSuffix}" in name or "${AWS::StackName}" in name
    retrain_res = [
        _text(r)
        for st in _statements(_fn_props(template, "RetrainFunction"))
        for r in _as_list(st.get("Resource", st.get("NotResource")))
    ]
    assert not [r for r in retrain_res if "DataBucket" in r]


# --------------------------------------------------------------------------
# API and cold start
# --------------------------------------------------------------------------
def test_predict_routes_and_api_auth(template):
    events = _fn_props(template, "PredictFunction")["Events"]
    routes = {
        (e["Properties"]["Method"].upper(), e["Properties"]["Path"])
        for e in events.values()
        if e["Type"] == "Api"
    }
    assert routes == {("POST", "/predict"), ("GET", "/model"), ("GET", "/health")}
    apis = {e["Properties"]["RestApiId"]["Ref"] for e in events.values()}
    assert len(apis) == 1
    api = template["Resources"][apis.pop()]
    assert api["Type"] == "AWS::Serverless::Api"
    props = api["Properties"]
    assert props["Auth"]["ApiKeyRequired"] is True
    assert props["Auth"]["UsagePlan"]["CreateUsagePlan"] in {"PER_API", "SHARED"}
    assert props["TracingEnabled"] is True
    assert "DestinationArn" in props["AccessLogSetting"]
    assert any("ThrottlingRateLimit" in m and "ThrottlingBurstLimit" in m for m in props["MethodSettings"])


def test_cold_start_strategies(template):
    param = template["Parameters"]["ColdStartStrategy"]
    assert set(param["AllowedValues"]) == {"none", "snapstart", "provisioned"}
    props = _fn_props(template, "PredictFunction")
    assert props["AutoPublishAlias"]
    apply_on = props["SnapStart"]["ApplyOn"]["Fn::If"]
    assert apply_on[1:] == ["PublishedVersions", "None"]
    provisioned = props["ProvisionedConcurrencyConfig"]["Fn::If"]
    assert provisioned[0] != apply_on[0] and provisioned[2] == {"Ref": "AWS::NoValue"}
    # SnapStart needs ephemeral storage <= 512 MB (the default).
    assert props.get("EphemeralStorage", {}).get("Size", 512) <= 512


# --------------------------------------------------------------------------
# Layer
# --------------------------------------------------------------------------
def test_layer_is_built_with_makefile_and_compileall(template):
    layer = template["Resources"]["ViralityLayer"]
    assert layer["Type"] == "AWS::Serverless::LayerVersion"
    assert layer["Metadata"]["BuildMethod"] == "makefile"
    arch = template["Globals"]["Function"]["Architectures"]
    assert arch == [layer["Metadata"]["BuildArchitecture"]] == layer["Properties"]["CompatibleArchitectures"]
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.12"]
    assert {"Ref": "ViralityLayer"} in template["Globals"]["Function"]["Layers"]

    layer_dir = ROOT / layer["Properties"]["ContentUri"]
    makefile = (layer_dir / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^build-ViralityLayer:", makefile, re.M)
    assert "compileall" in makefile and "unchecked-hash" in makefile
    make_arch = re.search(r"^LAYER_ARCH \?= *(\S+)", makefile, re.M).group(1)
    assert {"arm64": "aarch64", "x86_64": "x86_64"}[arch[0]] == make_arch
    assert (layer_dir / "virality" / "__init__.py").is_file()

    assert (layer_dir / "virality" / "baseline" / "ml-weights.json").is_file(), (
        "the layer ships the baseline weights"
    )

    requirements = (layer_dir / "requirements.txt").read_text(encoding="utf-8").lower()
    pinned = dict(re.findall(r"^([a-z0-9_.-]+)==(\S+)", requirements, re.M))
    assert {"numpy", "pydantic", "aws-lambda-powertools"} <= set(pinned)
    assert "boto3" not in pinned and "botocore" not in pinned


def test_layer_has_the_xray_sdk_when_tracing_is_active(template):
    # With active tracing, virality.observability builds Powertools' Tracer, which
    # imports aws_xray_sdk; its botocore dependency must come from the runtime.
    if template["Globals"]["Function"].get("Tracing") != "Active":
        pytest.skip("tracing is off")
    layer_dir = ROOT / template["Resources"]["ViralityLayer"]["Properties"]["ContentUri"]
    xray = (layer_dir / "requirements-xray.txt").read_text(encoding="utf-8").lower()
    assert re.search(r"^aws-xray-sdk==", xray, re.M)
    assert not re.search(r"^(boto3|botocore)\b", xray, re.M)
    makefile = (layer_dir / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"--no-deps --requirement \"\$\(SRC_DIR\)/requirements-xray.txt\"", makefile)


def test_retrain_memory_default_fits_the_largest_accepted_file(template):
    # docs/spark.md "Scaling": a raw CSV has ~68 bytes per row; training from it grows by
    # 195-219 bytes per row (benchmarks/bench_train_e2e.py; the body is freed once parsed),
    # plus at most ~640 MiB for the lambda search on its <= 1M-row sample.
    params = template["Parameters"]
    memory_mb = params["RetrainMemorySize"]["Default"]
    assert _fn_props(template, "RetrainFunction")["MemorySize"] == {"Ref": "RetrainMemorySize"}
    assert memory_mb == params["RetrainMemorySize"]["MaxValue"] == 10240
    rows = params["MaxTrainingBytes"]["Default"] / 68
    assert rows >= 40e6                                                   # issue 14's goal
    # 256 MiB for the runtime and imports, 640 MiB for the search sample
    assert rows * 230 <= memory_mb * 1024 * 1024 - (256 + 640) * 1024 * 1024
