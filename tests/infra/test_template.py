"""The synthesized template has every part of the deployment, with the settings that matter."""

from __future__ import annotations

from typing import Any

from aws_cdk.assertions import Match

from chalicelib.adapters.aws_iot_policies import failover_report_rule_sql, host_status_rule_sql
from chalicelib.adapters.dynamodb.table import table_definition
from chalicelib.config import VARIABLES
from chalicelib.domain.protocol import HOST_STATUS_FILTER
from infra.stack import API_STAGE, CHALICE_FUNCTIONS, TTL_ATTRIBUTE

from .conftest import Synthesized
from .evaluate import Resolver


def test_table_is_on_demand_recoverable_encrypted_with_ttl_and_kept(synthesized: Synthesized) -> None:
    key_id = synthesized.logical_id("AWS::KMS::Key", "Key")
    synthesized.assertions.has_resource("AWS::DynamoDB::Table", {
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": {
            "BillingMode": "PAY_PER_REQUEST",
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "TimeToLiveSpecification": {"AttributeName": TTL_ATTRIBUTE, "Enabled": True},
            "SSESpecification": {"SSEEnabled": True, "SSEType": "KMS",
                                 "KMSMasterKeyId": {"Fn::GetAtt": [key_id, "Arn"]}},
        },
    })


def test_table_has_the_shape_local_mode_creates(synthesized: Synthesized) -> None:
    """Keys and index exactly as ``table_definition`` (DynamoDB Local, moto) has them."""
    (table,) = synthesized.resources("AWS::DynamoDB::Table").values()
    props, local = table["Properties"], table_definition("x")

    def canonical(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return sorted(items, key=lambda d: sorted(d.items()))

    assert canonical(props["AttributeDefinitions"]) == canonical(local["AttributeDefinitions"])
    assert props["KeySchema"] == local["KeySchema"]
    assert props["GlobalSecondaryIndexes"] == local["GlobalSecondaryIndexes"]


def test_the_ttl_attribute_is_the_epoch_seconds_enrollment_keys_store() -> None:
    """DynamoDB expires an item only when its TTL attribute is a Number of epoch seconds."""
    from pynamodb.attributes import NumberAttribute

    from chalicelib.adapters.dynamodb import items

    attribute = items._KeyItem.get_attributes()[TTL_ATTRIBUTE]
    assert isinstance(attribute, NumberAttribute) and attribute.attr_name == TTL_ATTRIBUTE


def test_kms_key_rotates_and_encrypts_secret_and_logs(synthesized: Synthesized) -> None:
    key_id = synthesized.logical_id("AWS::KMS::Key", "Key")
    key_arn = {"Fn::GetAtt": [key_id, "Arn"]}
    synthesized.assertions.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})
    synthesized.assertions.has_resource_properties("AWS::SecretsManager::Secret", {"KmsKeyId": key_arn})
    groups = synthesized.resources("AWS::Logs::LogGroup")
    assert len(groups) == 9  # eight functions + the status rules' errors
    for group in groups.values():
        assert group["Properties"]["KmsKeyId"] == key_arn
        assert group["Properties"]["RetentionInDays"] == 30


def test_chalice_functions_get_own_role_name_environment_and_log_group(synthesized: Synthesized) -> None:
    functions = synthesized.resources("AWS::Serverless::Function")
    assert sorted(functions) == sorted(CHALICE_FUNCTIONS.values())
    table_id = synthesized.logical_id("AWS::DynamoDB::Table", "Table")
    roles = set()
    for name, logical_id in CHALICE_FUNCTIONS.items():
        props = functions[logical_id]["Properties"]
        role_id = props["Role"]["Fn::GetAtt"][0]
        roles.add(role_id)
        assert synthesized.template["Resources"][role_id]["Type"] == "AWS::IAM::Role"
        assert props["FunctionName"] == f"{synthesized.stack_name}-{name}"
        env = props["Environment"]["Variables"]
        assert env["SKYMESH_TABLE"] == {"Ref": table_id}
        assert env["SKYMESH_IOT_ENDPOINT"] == {"Fn::GetAtt": ["IotEndpointLookup", "Address"]}
        assert env["SKYMESH_IOT_POLICY"] == f"{synthesized.stack_name}-host"
        assert env["SKYMESH_IOT_NETWORK_PREFIX"] == f"{synthesized.stack_name}-net-"
        rule = synthesized.resources("AWS::IoT::TopicRule")["HostStatusRule"]
        assert env["SKYMESH_IOT_STATUS_RULE"] == rule["Properties"]["RuleName"]  # hosts use Basic Ingest
        assert (env["SKYMESH_PUBLISHER"], env["SKYMESH_IDENTITY"]) == ("iot", "iot")
        assert "SKYMESH_IOT_THING_PREFIX" not in env  # thing name = host id = MQTT client id
        assert set(env) <= {v.name for v in VARIABLES}  # nothing set that nobody reads
        depends = functions[logical_id]["DependsOn"]
        assert "FirstAdminKey" in depends and "HostPolicy" in depends
        log_group = synthesized.logical_id("AWS::Logs::LogGroup", f"{_pascal(name)}Logs")
        assert log_group in depends
        assert synthesized.template["Resources"][log_group]["Properties"]["LogGroupName"] == \
            f"/aws/lambda/{synthesized.stack_name}-{name}"
    assert len(roles) == len(CHALICE_FUNCTIONS)  # one role per function


def _pascal(name: str) -> str:
    return "".join(p.capitalize() for p in name.split("_"))


def test_schedules_and_rest_api(synthesized: Synthesized) -> None:
    functions = synthesized.resources("AWS::Serverless::Function")
    for logical_id in ("MarkOffline", "SweepBroadcasts", "Failover"):
        (event,) = functions[logical_id]["Properties"]["Events"].values()
        assert event == {"Type": "Schedule", "Properties": {"Schedule": "rate(1 minute)"}}
    (event,) = functions["SweepOrphans"]["Properties"]["Events"].values()
    assert event == {"Type": "Schedule", "Properties": {"Schedule": "rate(5 minutes)"}}
    synthesized.assertions.has_resource_properties("AWS::Serverless::Api", {"StageName": API_STAGE})
    api_url = synthesized.template["Outputs"]["ApiUrl"]["Value"]
    assert Resolver(synthesized.template, synthesized.stack_name).resolve(api_url) == \
        f"https://RestAPI-physical-id.execute-api.us-east-1.amazonaws.com/{API_STAGE}"


def test_host_status_rule_delivers_reports_to_host_report(synthesized: Synthesized) -> None:
    rule_name = f"{synthesized.stack_name.replace('-', '_')}_host_status"
    synthesized.assertions.has_resource_properties("AWS::IoT::TopicRule", {
        "RuleName": rule_name,
        "TopicRulePayload": {
            "Sql": host_status_rule_sql(),
            "AwsIotSqlVersion": "2016-03-23",
            "RuleDisabled": False,
            "Actions": [{"Lambda": {"FunctionArn": {"Fn::GetAtt": ["HostReport", "Arn"]}}}],
            "ErrorAction": {"CloudwatchLogs": Match.object_like({})},
        },
    })
    assert f"FROM '{HOST_STATUS_FILTER}'" in host_status_rule_sql()
    synthesized.assertions.has_resource_properties("AWS::Lambda::Permission", {
        "Action": "lambda:InvokeFunction",
        "FunctionName": {"Fn::GetAtt": ["HostReport", "Arn"]},
        "Principal": "iot.amazonaws.com",
        "SourceArn": {"Fn::GetAtt": ["HostStatusRule", "Arn"]},
        "SourceAccount": {"Ref": "AWS::AccountId"},
    })


def test_failover_report_rule_delivers_only_reports_with_latency_or_direct_to_failover_report(
        synthesized: Synthesized) -> None:
    rules = synthesized.resources("AWS::IoT::TopicRule")
    assert sorted(rules) == ["FailoverReportRule", "HostStatusRule"]
    synthesized.assertions.has_resource_properties("AWS::IoT::TopicRule", {
        "RuleName": f"{synthesized.stack_name.replace('-', '_')}_failover_report",
        "TopicRulePayload": {
            "Sql": failover_report_rule_sql(),
            "AwsIotSqlVersion": "2016-03-23",
            "RuleDisabled": False,
            "Actions": [{"Lambda": {"FunctionArn": {"Fn::GetAtt": ["FailoverReport", "Arn"]}}}],
            # a failed delivery goes where the status rule's go
            "ErrorAction": rules["HostStatusRule"]["Properties"]["TopicRulePayload"]["ErrorAction"],
        },
    })
    # the status rule's reports, narrowed to those that measured something
    assert failover_report_rule_sql().startswith(host_status_rule_sql() + " AND ")
    assert "latency" in failover_report_rule_sql()
    # and those that say a relayed pair's direct path answered (automatic relays)
    assert "NOT isUndefined(get(direct, 0))" in failover_report_rule_sql()
    # IoT may invoke the report functions, each only from its own rule in this account
    invokers = {(p["FunctionName"]["Fn::GetAtt"][0], p["SourceArn"]["Fn::GetAtt"][0])
                for p in (r["Properties"] for r in synthesized.resources("AWS::Lambda::Permission").values())
                if p["Principal"] == "iot.amazonaws.com" and p["Action"] == "lambda:InvokeFunction"
                and p["SourceAccount"] == {"Ref": "AWS::AccountId"}}
    assert invokers == {("HostReport", "HostStatusRule"), ("FailoverReport", "FailoverReportRule")}


def test_deploy_time_steps_run_the_packaged_bootstrap(synthesized: Synthesized) -> None:
    secret_id = synthesized.logical_id("AWS::SecretsManager::Secret", "AdminKeySecret")
    table_id = synthesized.logical_id("AWS::DynamoDB::Table", "Table")
    bootstrap_id = synthesized.logical_id("AWS::Lambda::Function", "Bootstrap")
    synthesized.assertions.has_resource_properties("AWS::Lambda::Function", {
        "Handler": "chalicelib.adapters.aws_bootstrap.handler",
        "FunctionName": f"{synthesized.stack_name}-bootstrap",
    })
    token = {"Fn::GetAtt": [bootstrap_id, "Arn"]}
    synthesized.assertions.has_resource_properties("Custom::SkymeshAdminKey", {
        "ServiceToken": token, "SecretId": {"Ref": secret_id}, "TableName": {"Ref": table_id}})
    synthesized.assertions.has_resource_properties("Custom::SkymeshIotEndpoint", {"ServiceToken": token})
    # The bootstrap runs from the very package Chalice built for the app.
    code = synthesized.template["Resources"][bootstrap_id]["Properties"]["Code"]
    assert code["S3Key"] == synthesized.template["Resources"]["APIHandler"]["Properties"]["CodeUri"]["Key"]


def test_outputs_say_where_everything_is(synthesized: Synthesized) -> None:
    outputs = synthesized.template["Outputs"]
    for name in ("ApiUrl", "IotEndpoint", "AdminKeySecretArn", "AdminKeyCommand", "TableName",
                 "KeyArn", "HostPolicyName", "HostStatusIngestTopic"):
        assert outputs[name].get("Description"), name
    resolver = Resolver(synthesized.template, synthesized.stack_name,
                        physical={"AdminKeySecretF05D8AEB": "arn:secret"},
                        attributes={("IotEndpointLookup", "Address"): "x-ats.iot.us-east-1.amazonaws.com"})
    assert resolver.resolve(outputs["IotEndpoint"]["Value"]) == "x-ats.iot.us-east-1.amazonaws.com"
    secret_id = synthesized.logical_id("AWS::SecretsManager::Secret", "AdminKeySecret")
    resolver.physical[secret_id] = "arn:secret"
    assert resolver.resolve(outputs["AdminKeyCommand"]["Value"]) == (
        "aws secretsmanager get-secret-value --secret-id arn:secret --query SecretString --output text")
    assert outputs["HostStatusIngestTopic"]["Value"] == (
        f"$aws/rules/{synthesized.stack_name.replace('-', '_')}_host_status/sm/h/<host id>/status")


def test_template_size_and_resources(synthesized: Synthesized) -> None:
    """CloudFormation's limits: 500 resources, 1 MB template (S3); far below both."""
    assert len(synthesized.template["Resources"]) < 60
    assert synthesized.template_path.stat().st_size < 200_000


def _gateway_responses(synthesized: Synthesized) -> dict[str, Any]:
    (api,) = synthesized.resources("AWS::Serverless::Api").values()
    return api["Properties"]["DefinitionBody"]["x-amazon-apigateway-gateway-responses"]  # type: ignore[no-any-return]


def _rendered(template: str) -> Any:
    """The body API Gateway sends: its one variable replaced as it would (a JSON string)."""
    import json
    return json.loads(template.replace("$context.error.messageString", json.dumps("API Gateway's text")))


def test_api_gateway_answers_in_our_error_shape(synthesized: Synthesized) -> None:
    """Requests API Gateway answers itself (no Lambda call) get {"error": {"code", "message"}}."""
    from chalicelib.api.chalice_errors import NO_ROUTE_MESSAGE

    responses = _gateway_responses(synthesized)
    assert {"MISSING_AUTHENTICATION_TOKEN", "UNSUPPORTED_MEDIA_TYPE", "THROTTLED", "ACCESS_DENIED",
            "DEFAULT_4XX", "DEFAULT_5XX"} <= set(responses)
    for response_type, response in responses.items():
        assert response["responseParameters"] == {
            "gatewayresponse.header.Content-Type": "'application/json'"}, response_type
        body = _rendered(response["responseTemplates"]["application/json"])
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, response_type
        assert body["error"]["code"] and body["error"]["message"], response_type
    # Unknown paths and methods: 404 (not 403 "Missing Authentication Token"), the local message.
    missing = responses["MISSING_AUTHENTICATION_TOKEN"]
    assert missing["statusCode"] == "404"
    assert _rendered(missing["responseTemplates"]["application/json"])["error"] == {
        "code": "not_found", "message": NO_ROUTE_MESSAGE}
    assert responses["UNSUPPORTED_MEDIA_TYPE"]["statusCode"] == "415"
    assert responses["THROTTLED"]["statusCode"] == "429"
    # The defaults keep API Gateway's status and message.
    assert "statusCode" not in responses["DEFAULT_4XX"] and "statusCode" not in responses["DEFAULT_5XX"]
    assert _rendered(responses["DEFAULT_5XX"]["responseTemplates"]["application/json"])["error"][
        "message"] == "API Gateway's text"
