"""The skymesh stack: everything the control plane needs on AWS, in one CloudFormation stack.

What each resource is for (docs/deploy.md has the same list for people):

- ``Key`` — the customer managed KMS key for everything kept at rest: the table,
  the admin-key secret, the log groups.
- ``Table`` — the single DynamoDB table (layout: ``chalicelib/adapters/dynamodb/items.py``),
  on demand, point-in-time recovery, TTL on ``expires_at`` (expired enrollment keys go).
  Kept when the stack is deleted unless ``retain_data=False``.
- ``App`` — the Chalice app through Chalice's CDK construct: the REST API (API
  Gateway + ``api_handler``), ``host_report`` and ``failover_report`` (called by the IoT
  rules) and the schedules ``mark_offline``, ``sweep_broadcasts`` and ``failover`` (every
  minute) and ``sweep_orphans`` (every 5 minutes). Chalice makes no IAM here: each function
  gets its own role from :mod:`infra.grants`.
- ``Bootstrap`` + ``FirstAdminKey`` + ``IotEndpointLookup`` — deploy-time custom resources
  (``chalicelib/adapters/aws_bootstrap.py``): the first admin key into
  ``AdminKeySecret``, and the account's IoT data endpoint for the functions.
- ``HostPolicy`` — the static IoT policy on every host certificate; per-network
  policies on per-network thing groups are made by the API at run time
  (``chalicelib/adapters/aws_iot_policies.py``).
- ``RestAPI`` gateway responses — what API Gateway answers itself (unknown path or
  method, unsupported media type, throttling, its own 4xx/5xx) in the API's error
  shape ``{"error": {"code", "message"}}`` (:func:`gateway_responses`).
- ``HostStatusRule`` — the topic rule that hands status reports (broker topic or
  Basic Ingest) to ``host_report``; failed deliveries go to ``RuleErrorLogs``.
- ``FailoverReportRule`` — the topic rule that hands the status reports carrying latency or
  ``direct`` (broker topic) to ``failover_report`` as well; failed deliveries go to ``RuleErrorLogs``.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from aws_cdk import (
    Aws,
    CfnOutput,
    CustomResource,
    Duration,
    Fn,
    RemovalPolicy,
    Stack,
    Stage,
)
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot as iot
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_secretsmanager as secretsmanager
from chalice.cdk import Chalice
from constructs import Construct

from chalicelib import config
from chalicelib.adapters.aws_bootstrap import ADMIN_KEY_TYPE, IOT_ENDPOINT_TYPE
from chalicelib.adapters.aws_iot_policies import (
    basic_ingest_topic,
    failover_report_rule_sql,
    host_policy_document,
    host_status_rule_sql,
)
from chalicelib.adapters.dynamodb.items import KIND_INDEX
from chalicelib.adapters.dynamodb.table import table_definition
from chalicelib.api.chalice_errors import ACCEPTED_CONTENT_TYPE, NO_ROUTE_CODE, NO_ROUTE_MESSAGE

from .grants import FUNCTIONS, Arns, statements_for

__all__ = ["SkymeshStack", "CHALICE_FUNCTIONS", "TTL_ATTRIBUTE", "REPO_ROOT", "API_STAGE",
           "gateway_responses"]

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Chalice function name (app.py) -> logical id of its function in the template Chalice writes.
CHALICE_FUNCTIONS = {
    "api_handler": "APIHandler",
    "host_report": "HostReport",
    "mark_offline": "MarkOffline",
    "sweep_broadcasts": "SweepBroadcasts",
    "sweep_orphans": "SweepOrphans",
    "failover_report": "FailoverReport",
    "failover": "Failover",
}

#: Enrollment keys carry ``expires_at`` (epoch seconds) when they expire; DynamoDB
#: deletes such items some time (typically within two days) after that moment.
TTL_ATTRIBUTE = "expires_at"

#: API Gateway stage: the API URL is ``https://<id>.execute-api.<region>.amazonaws.com/api``.
API_STAGE = "api"

#: Chalice needs a role ARN when it does not manage roles; every function's role is
#: replaced by its own least-privilege role below (a test checks none keeps this).
_UNUSED_ROLE = "arn:aws:iam::000000000000:role/replaced-by-cdk"

_LOG_RETENTION = logs.RetentionDays.ONE_MONTH


def _runtime() -> str:
    """The Lambda runtime Chalice packages for: the Python running this (its wheels' ABI)."""
    return f"python{sys.version_info.major}.{sys.version_info.minor}"


#: API Gateway's own message for a response type (a JSON string literal, quotes included).
_GATEWAY_MESSAGE = "$context.error.messageString"

#: response type -> (status, code, message); message None: API Gateway's own message.
_GATEWAY_RESPONSES: dict[str, tuple[str | None, str, str | None]] = {
    # API Gateway says "Missing Authentication Token" (403) for a path it does not have
    # AND for a method a known path does not have: the two cannot be told apart there,
    # so both are 404 on AWS (locally a wrong method is 405 with Allow).
    "MISSING_AUTHENTICATION_TOKEN": ("404", NO_ROUTE_CODE, NO_ROUTE_MESSAGE),
    # No route uses IAM auth, so a signature error can only mean an unknown route whose
    # Bearer header API Gateway tried to read as SigV4 ("Authorization header requires
    # 'Credential'..."). Which type it uses then was not checked on AWS; DEFAULT_4XX
    # below puts any other one in our shape too.
    "INVALID_SIGNATURE": ("404", NO_ROUTE_CODE, NO_ROUTE_MESSAGE),
    "EXPIRED_TOKEN": ("404", NO_ROUTE_CODE, NO_ROUTE_MESSAGE),
    "RESOURCE_NOT_FOUND": ("404", NO_ROUTE_CODE, NO_ROUTE_MESSAGE),
    "UNSUPPORTED_MEDIA_TYPE": (
        "415", "unsupported_media_type",
        f"this Content-Type is not accepted; send the body as {ACCEPTED_CONTENT_TYPE}"),
    "REQUEST_TOO_LARGE": ("413", "too_large", "the request is larger than API Gateway accepts"),
    "THROTTLED": ("429", "throttled", "too many requests; retry after a pause"),
    "QUOTA_EXCEEDED": ("429", "throttled", "request quota exceeded; retry later"),
    "ACCESS_DENIED": ("403", "forbidden", None),
    "UNAUTHORIZED": ("401", "unauthorized", None),
    "INTEGRATION_TIMEOUT": ("504", "unavailable", "the API did not answer in time; retry"),
    "INTEGRATION_FAILURE": ("502", "unavailable", "the API could not be reached; retry"),
    # Everything else keeps its status and API Gateway's message, in our shape.
    "DEFAULT_4XX": (None, "bad_request", None),
    "DEFAULT_5XX": (None, "unavailable", None),
}


def gateway_responses() -> dict[str, dict[str, Any]]:
    """``x-amazon-apigateway-gateway-responses`` for the REST API: API Gateway's own answers
    in the API's error shape ``{"error": {"code", "message"}}``, as JSON."""
    out: dict[str, dict[str, Any]] = {}
    for response_type, (status, code, message) in _GATEWAY_RESPONSES.items():
        quoted = json.dumps(message) if message is not None else _GATEWAY_MESSAGE
        entry: dict[str, Any] = {
            "responseParameters": {"gatewayresponse.header.Content-Type": "'application/json'"},
            "responseTemplates": {
                "application/json": f'{{"error":{{"code":{json.dumps(code)},"message":{quoted}}}}}'},
        }
        if status is not None:
            entry["statusCode"] = status
        out[response_type] = entry
    return out


def _pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


class SkymeshStack(Stack):
    """The whole control plane; see the module docstring for what each part is for."""

    def __init__(self, scope: Construct, construct_id: str, *, retain_data: bool = True,
                 source_dir: Path = REPO_ROOT, **kwargs: Any) -> None:
        """``retain_data=False`` lets ``cdk destroy`` delete the table and the KMS key too
        (for throwaway stacks); by default both outlive the stack."""
        super().__init__(scope, construct_id, **kwargs)
        name = self.stack_name
        keep = RemovalPolicy.RETAIN if retain_data else RemovalPolicy.DESTROY
        iot_arn = f"arn:{Aws.PARTITION}:iot:{Aws.REGION}:{Aws.ACCOUNT_ID}:"
        network_prefix = f"{name}-net-"
        rule_name = f"{name.replace('-', '_')}_host_status"

        # --- data at rest -----------------------------------------------------------------
        key = kms.Key(self, "Key", description=f"{name}: table, admin-key secret and logs",
                      enable_key_rotation=True, removal_policy=keep,
                      pending_window=Duration.days(30))
        # CloudWatch Logs encrypts the log groups with the key, for this stack's groups only.
        key.add_to_resource_policy(iam.PolicyStatement(
            sid="LogsEncryptThisStacksLogGroups",
            principals=[iam.ServicePrincipal(f"logs.{Aws.REGION}.amazonaws.com")],
            actions=["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:ReEncryptFrom",
                     "kms:ReEncryptTo", "kms:DescribeKey"],
            resources=["*"],  # in a key policy, "*" is this key
            conditions={"ArnLike": {"kms:EncryptionContext:aws:logs:arn":
                                    f"arn:{Aws.PARTITION}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:log-group:*"}},
        ))
        table = self._table(key, keep)
        # L1 on purpose: the L2 Secret would add key-policy statements the account's
        # IAM already covers. The generated value is a placeholder that FirstAdminKey
        # replaces by a real admin key.
        secret = secretsmanager.CfnSecret(
            self, "AdminKeySecret",
            description=f"{name}: the first admin key (Bearer token for the REST API)",
            kms_key_id=key.key_arn,
            generate_secret_string=secretsmanager.CfnSecret.GenerateSecretStringProperty(
                password_length=32, exclude_punctuation=True),
        )
        secret.apply_removal_policy(RemovalPolicy.DESTROY)

        # --- functions ---------------------------------------------------------------------
        log_groups = {
            fn: logs.LogGroup(self, f"{_pascal(fn)}Logs", log_group_name=f"/aws/lambda/{name}-{fn}",
                              retention=_LOG_RETENTION, encryption_key=key,
                              removal_policy=RemovalPolicy.DESTROY)
            for fn in FUNCTIONS
        }
        arns = Arns(region=Aws.REGION, table=table.table_arn, key=key.key_arn, iot=iot_arn,
                    network_prefix=network_prefix, secret=secret.ref,
                    ec2=f"arn:{Aws.PARTITION}:ec2:{Aws.REGION}:{Aws.ACCOUNT_ID}:", stack=name,
                    log_group={fn: group.log_group_arn for fn, group in log_groups.items()})
        roles = {
            fn: iam.Role(self, f"{_pascal(fn)}Role",
                         assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                         description=f"{name}: {fn} (least privilege, see infra/grants.py)",
                         inline_policies={"least-privilege": iam.PolicyDocument(
                             statements=statements_for(fn, arns))})
            for fn in FUNCTIONS
        }

        with contextlib.chdir(self._chalice_workdir()):  # Chalice writes chalice.out/ here
            app = Chalice(self, "App", source_dir=str(source_dir), stage_config={
                "api_gateway_stage": API_STAGE,
                "autogen_policy": False,
                "manage_iam_role": False,
                "iam_role_arn": _UNUSED_ROLE,
                "lambda_memory_size": 512,
                "lambda_timeout": 30,
                "environment_variables": dict(config.AWS_STAGE_ENV),
            })
        code: s3_assets.Asset = app.node.find_child("ChaliceAppCode")  # type: ignore[assignment]

        # L1 on purpose: the L2 Function would add a DependsOn its role that the Role
        # reference already implies (cfn-lint W3005).
        bootstrap = lambda_.CfnFunction(
            self, "Bootstrap", function_name=f"{name}-bootstrap", runtime=_runtime(),
            handler="chalicelib.adapters.aws_bootstrap.handler",
            code=lambda_.CfnFunction.CodeProperty(s3_bucket=code.s3_bucket_name, s3_key=code.s3_object_key),
            role=roles["bootstrap"].role_arn, timeout=60, memory_size=256,
            description=f"{name}: deploy-time steps (first admin key, IoT endpoint)",
        )
        bootstrap.node.add_dependency(log_groups["bootstrap"])
        endpoint = CustomResource(self, "IotEndpointLookup", service_token=bootstrap.attr_arn,
                                  resource_type=IOT_ENDPOINT_TYPE)
        admin_key = CustomResource(self, "FirstAdminKey", service_token=bootstrap.attr_arn,
                                   resource_type=ADMIN_KEY_TYPE,
                                   properties={"SecretId": secret.ref,
                                               "TableName": table.table_name})
        host_policy = iot.CfnPolicy(self, "HostPolicy", policy_name=f"{name}-host",
                                    policy_document=host_policy_document(iot_arn, ingest_rule=rule_name))

        env = {  # what chalicelib.config reads; the rest of a Lambda's environment is AWS's own
            config.TABLE: table.table_name,
            config.IOT_POLICY: f"{name}-host",
            config.IOT_ENDPOINT: endpoint.get_att_string("Address"),
            config.IOT_NETWORK_PREFIX: network_prefix,
            config.IOT_STATUS_RULE: rule_name,
        }
        for fn, logical_id in CHALICE_FUNCTIONS.items():
            function = app.get_resource(logical_id)
            function.add_property_override("FunctionName", f"{name}-{fn}")
            function.add_property_override("Role", roles[fn].role_arn)
            for var, value in env.items():
                function.add_property_override(f"Environment.Variables.{var}", value)
            # Its log group exists before it can run; the first admin key
            # exists before the API can be called.
            function.node.add_dependency(log_groups[fn], host_policy, admin_key)

        self._status_rules(app, key, rule_name, failover_rule=f"{name.replace('-', '_')}_failover_report")

        # In the API definition (not separate AWS::ApiGateway::GatewayResponse resources):
        # SAM's deployment hashes the definition, so a change here is redeployed to the
        # stage; a separate resource would only take effect at the next deployment.
        app.get_resource("RestAPI").add_property_override(
            "DefinitionBody.x-amazon-apigateway-gateway-responses", gateway_responses())

        # --- outputs -----------------------------------------------------------------------
        api_url = Fn.join("", ["https://", app.get_resource("RestAPI").ref, ".execute-api.",
                               Aws.REGION, ".", Aws.URL_SUFFIX, f"/{API_STAGE}"])
        CfnOutput(self, "ApiUrl", value=api_url,
                  description="REST API base URL: skymesh --api URL, skymesh-agent join --server URL")
        CfnOutput(self, "IotEndpoint", value=endpoint.get_att_string("Address"),
                  description="AWS IoT Core ATS endpoint the agents connect to (MQTT over TLS, 8883)")
        CfnOutput(self, "AdminKeySecretArn", value=secret.ref,
                  description="Secrets Manager secret holding the first admin key")
        CfnOutput(self, "AdminKeyCommand",
                  value=Fn.join("", ["aws secretsmanager get-secret-value --secret-id ",
                                     secret.ref, " --query SecretString --output text"]),
                  description="Prints the first admin key")
        CfnOutput(self, "TableName", value=table.table_name, description="DynamoDB table")
        CfnOutput(self, "KeyArn", value=key.key_arn,
                  description="KMS key of the table, secret and logs (kept with the table)")
        CfnOutput(self, "HostPolicyName", value=host_policy.ref,
                  description="IoT policy attached to every host certificate")
        CfnOutput(self, "HostStatusIngestTopic", value=basic_ingest_topic(rule_name, "<host id>"),
                  description="Basic Ingest topic hosts may publish status on (no messaging charge)")

    # --- parts -------------------------------------------------------------------------------

    def _chalice_workdir(self) -> Path:
        """Where Chalice packages the app: inside the cloud assembly (not the repository)."""
        outdir = Path(Stage.of(self).outdir)  # type: ignore[union-attr]
        outdir.mkdir(parents=True, exist_ok=True)
        return outdir

    def _table(self, key: kms.IKey, removal: RemovalPolicy) -> dynamodb.Table:
        """The table in the shape of ``table_definition`` (what local mode and tests create)."""
        shape = table_definition("unused")
        types = {a["AttributeName"]: a["AttributeType"] for a in shape["AttributeDefinitions"]}

        def attribute(name: str) -> dynamodb.Attribute:
            return dynamodb.Attribute(name=name, type=dynamodb.AttributeType(
                {"S": "STRING", "N": "NUMBER", "B": "BINARY"}[types[name]]))

        def keys(schema: list[dict[str, str]]) -> tuple[str, str | None]:
            by_type = {k["KeyType"]: k["AttributeName"] for k in schema}
            return by_type["HASH"], by_type.get("RANGE")

        pk, sk = keys(shape["KeySchema"])
        table = dynamodb.Table(
            self, "Table",
            partition_key=attribute(pk), sort_key=attribute(sk) if sk else None,
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED, encryption_key=key,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True),
            time_to_live_attribute=TTL_ATTRIBUTE,
            removal_policy=removal,
        )
        for index in shape["GlobalSecondaryIndexes"]:
            assert index["IndexName"] == KIND_INDEX and index["Projection"]["ProjectionType"] == "ALL"
            gpk, gsk = keys(index["KeySchema"])
            table.add_global_secondary_index(
                index_name=index["IndexName"], partition_key=attribute(gpk),
                sort_key=attribute(gsk) if gsk else None, projection_type=dynamodb.ProjectionType.ALL)
        return table

    def _status_rules(self, app: Chalice, key: kms.IKey, rule_name: str, failover_rule: str) -> None:
        """Status reports → ``host_report``, those carrying latency or direct → ``failover_report`` too;
        a failed delivery is logged, not lost silently."""
        errors = logs.LogGroup(self, "RuleErrorLogs",
                               log_group_name=f"/skymesh/{self.stack_name}/iot-rule-errors",
                               retention=_LOG_RETENTION, encryption_key=key,
                               removal_policy=RemovalPolicy.DESTROY)
        error_role = iam.Role(
            self, "RuleErrorRole", assumed_by=iam.ServicePrincipal("iot.amazonaws.com"),
            description=f"{self.stack_name}: the status rules write failed deliveries to their log group",
            inline_policies={"rule-errors": iam.PolicyDocument(statements=[iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"],
                resources=[errors.log_group_arn])])},
        )
        error_action = iot.CfnTopicRule.ActionProperty(
            cloudwatch_logs=iot.CfnTopicRule.CloudwatchLogsActionProperty(
                log_group_name=errors.log_group_name, role_arn=error_role.role_arn))
        # Two rules, not two actions of one: a rule's WHERE applies to all its actions, and
        # failover_report is invoked only for the reports that carry latency or direct. A report sent
        # through Basic Ingest reaches only the rule it names (HostStatusRule): the failover
        # rule sees the reports published on the broker topic (docs/deploy.md).
        for logical_id, name, sql, function, description in (
            ("HostStatusRule", rule_name, host_status_rule_sql(), "host_report",
             "Host status reports (broker topic or Basic Ingest) to host_report"),
            ("FailoverReportRule", failover_rule, failover_report_rule_sql(), "failover_report",
             "Host status reports that carry latency or direct to failover_report (placement, relays)"),
        ):
            function_arn = app.get_resource(CHALICE_FUNCTIONS[function]).get_att("Arn").to_string()
            rule = iot.CfnTopicRule(
                self, logical_id, rule_name=name,
                topic_rule_payload=iot.CfnTopicRule.TopicRulePayloadProperty(
                    sql=sql, aws_iot_sql_version="2016-03-23", rule_disabled=False,
                    description=description,
                    actions=[iot.CfnTopicRule.ActionProperty(
                        lambda_=iot.CfnTopicRule.LambdaActionProperty(function_arn=function_arn))],
                    error_action=error_action,
                ),
            )
            lambda_.CfnPermission(
                self, f"{logical_id}Invokes", action="lambda:InvokeFunction",
                function_name=function_arn, principal="iot.amazonaws.com",
                source_arn=rule.attr_arn, source_account=Aws.ACCOUNT_ID,
            )
