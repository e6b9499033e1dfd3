"""Host identities on AWS IoT Core (the ``HostIdentity`` port).

Each host is one IoT *thing* named ``<thing_prefix><host_id>`` (attribute
``host_id`` = the host id). Its certificate is signed by AWS IoT from a CSR the
agent made (the private key never leaves the host), attached to the thing and
to one static policy. Each network is one *thing group* named
``<network_prefix><network_id>`` (default prefix ``<thing_prefix>net-``); the
host is a member of exactly the groups of its networks.

Policies (documents in :mod:`chalicelib.adapters.aws_iot_policies`)
-------------------------------------------------------------------

The static host policy ``SKYMESH_IOT_POLICY`` (made by the stack in ``infra/``) is
attached to every certificate. Through policy variables on the thing name it lets
a certificate connect only with client id = its own thing name (which also stops
one host taking over another's session, and is what makes AWS IoT apply
thing-group policies), read only its own inbox and publish only its own status.
The thing name must therefore *be* the host id that
:mod:`chalicelib.domain.protocol` puts in host topics and that the API hands the
agent as its client id: keep ``thing_prefix`` empty on a deployed stack (a prefix
is for tests and for registries shared with something else).

Each network has a thing group ``<network_prefix><network_id>`` and a policy of
the same name, attached to that group, that allows subscribing to and receiving
the network's broadcast topic. Both are made here at run time (networks are made
at run time): a host reads exactly the broadcasts of the groups it is in.
``iot:Receive`` is checked on every delivered message, so leaving a group stops
that network's broadcasts even on a live connection. Joining a group also
(re)attaches its policy, so an interrupted earlier join heals itself.

AWS IoT lets a thing be a direct member of at most 10 thing groups (a hard
quota), hence at most 10 networks per host on AWS; :meth:`IotIdentity.set_networks`
refuses more with a 4xx ``too_many_networks`` before touching anything.

Errors: throttling is retried; AWS refusals become :mod:`chalicelib.errors`
exceptions with a message naming the IAM action and what to do.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Iterator, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ..domain.ids import HostId, NetworkId
from ..errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    SkymeshError,
    UnavailableError,
)
from ..service.ports import IssuedCertificate
from .aws_iot_data import (
    Sleep,
    aws_error_code,
    aws_error_message,
    call_with_retries,
    unavailable_error,
)
from .aws_iot_policies import basic_ingest_topic, iot_arn_prefix, network_policy_document
from .mqtt_access import MqttAccess

__all__ = ["IotIdentity", "AMAZON_ROOT_CA_1", "load_csr", "MAX_CSR_CHARS"]

log = logging.getLogger(__name__)

#: The CA that signs AWS IoT Core's ATS server certificates (SHA-256 fingerprint
#: 8E:CD:E6:88:4F:3D:87:B1:12:5B:A3:1A:C3:FC:B1:3D:70:16:DE:7F:57:CC:90:4F:E1:CB:97:C6:AE:98:19:6E).
AMAZON_ROOT_CA_1 = """\
-----BEGIN CERTIFICATE-----
MIIDQTCCAimgAwIBAgITBmyfz5m/jAo54vB4ikPmljZbyjANBgkqhkiG9w0BAQsF
ADA5MQswCQYDVQQGEwJVUzEPMA0GA1UEChMGQW1hem9uMRkwFwYDVQQDExBBbWF6
b24gUm9vdCBDQSAxMB4XDTE1MDUyNjAwMDAwMFoXDTM4MDExNzAwMDAwMFowOTEL
MAkGA1UEBhMCVVMxDzANBgNVBAoTBkFtYXpvbjEZMBcGA1UEAxMQQW1hem9uIFJv
b3QgQ0EgMTCCASIwDQYJKoZIhvcNAQEBBQADggEPADCCAQoCggEBALJ4gHHKeNXj
ca9HgFB0fW7Y14h29Jlo91ghYPl0hAEvrAIthtOgQ3pOsqTQNroBvo3bSMgHFzZM
9O6II8c+6zf1tRn4SWiw3te5djgdYZ6k/oI2peVKVuRF4fn9tBb6dNqcmzU5L/qw
IFAGbHrQgLKm+a/sRxmPUDgH3KKHOVj4utWp+UhnMJbulHheb4mjUcAwhmahRWa6
VOujw5H5SNz/0egwLX0tdHA114gk957EWW67c4cX8jJGKLhD+rcdqsq08p8kDi1L
93FcXmn/6pUCyziKrlA4b9v7LWIbxcceVOF34GfID5yHI9Y/QCB/IIDEgEw+OyQm
jgSubJrIqg0CAwEAAaNCMEAwDwYDVR0TAQH/BAUwAwEB/zAOBgNVHQ8BAf8EBAMC
AYYwHQYDVR0OBBYEFIQYzIU07LwMlJQuCFmcx7IQTgoIMA0GCSqGSIb3DQEBCwUA
A4IBAQCY8jdaQZChGsV2USggNiMOruYou6r4lK5IpDB/G/wkjUu0yKGX9rbxenDI
U5PMCCjjmCXPI6T53iHTfIUJrU6adTrCC2qJeHZERxhlbI1Bjjt/msv0tadQ1wUs
N+gDS63pYaACbvXy8MWy7Vu33PqUXHeeE6V/Uq2V8viTO96LXFvKWlJbYK8U90vv
o/ufQJVtMVT8QtPHRh8jrdkPSHCa2XV4cdFyQzR1bldZwgJcJmApzyMZFo6IQ6XU
5MsI+yMRQ+hDKXJioaldXgjUkK642M4UwtBV8ob2xJNDd2ZhwLnoQdeXeGADbkpy
rqXRfboQnoZsG4q5WTP468SQvvG5
-----END CERTIFICATE-----
"""

#: A CSR larger than this is refused before it reaches AWS (real ones are < 2 KiB).
MAX_CSR_CHARS = 16_384

#: AWS IoT thing and thing-group names.
_NAME_RE = re.compile(r"^[a-zA-Z0-9:_-]{1,128}$")
_PREFIX_RE = re.compile(r"^[a-zA-Z0-9:_-]{0,64}$")
#: A network's thing group and policy share one name: no ":" (IoT policy names refuse it).
_GROUP_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
#: Key types AWS IoT signs: RSA of 2048 bits or more, ECDSA on these curves.
_EC_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_CSR_BEGIN = "-----BEGIN CERTIFICATE REQUEST-----"

#: AWS IoT allows a thing to be in at most 10 thing groups.
DEFAULT_MAX_GROUPS_PER_THING = 10


def load_csr(csr_pem: str) -> x509.CertificateSigningRequest:
    """Parse and check a PEM CSR: well-formed, self-signed by its key, a key type AWS IoT signs.

    Raises :class:`InvalidInputError` saying what is wrong otherwise.
    """
    if not isinstance(csr_pem, str) or not csr_pem.strip():
        raise InvalidInputError(
            "csr is empty: send a PEM-encoded PKCS#10 certificate signing request",
            code="invalid_csr",
        )
    if len(csr_pem) > MAX_CSR_CHARS:
        raise InvalidInputError(
            f"csr is {len(csr_pem)} characters; at most {MAX_CSR_CHARS} are accepted",
            code="invalid_csr",
        )
    if _CSR_BEGIN not in csr_pem:
        raise InvalidInputError(
            f"csr is not PEM: expected a block starting with {_CSR_BEGIN}",
            code="invalid_csr",
        )
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode("ascii", errors="strict"))
    except (ValueError, UnicodeEncodeError) as err:
        raise InvalidInputError(
            f"csr could not be parsed as a PEM certificate signing request ({err})",
            code="invalid_csr",
        ) from None
    try:
        key = csr.public_key()
        signature_ok = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm) as err:
        raise InvalidInputError(
            f"csr uses a key or signature algorithm that cannot be checked ({err})",
            code="invalid_csr",
        ) from None
    if not signature_ok:
        raise InvalidInputError(
            "csr signature does not verify: it must be signed by the private key it carries",
            code="invalid_csr",
        )
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise InvalidInputError(
                f"csr has a {key.key_size}-bit RSA key; AWS IoT needs at least 2048 bits",
                code="invalid_csr",
            )
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _EC_CURVES):
            raise InvalidInputError(
                f"csr has an EC key on {key.curve.name}; use P-256, P-384 or P-521",
                code="invalid_csr",
            )
    else:
        raise InvalidInputError(
            f"csr has a {type(key).__name__}; AWS IoT signs only RSA (2048+) and "
            "ECDSA (P-256, P-384, P-521) keys",
            code="invalid_csr",
        )
    return csr


def _cert_id_from_arn(arn: str) -> str | None:
    head, sep, tail = arn.rpartition(":cert/")
    return tail if sep and head else None


class IotIdentity(MqttAccess):
    """The ``HostIdentity`` port on the AWS IoT registry (things, certificates, thing groups)."""

    def __init__(
        self,
        iot_client: Any,
        *,
        endpoint: str,
        policy_name: str,
        thing_prefix: str = "",
        network_prefix: str | None = None,
        ca_pem: str = AMAZON_ROOT_CA_1,
        port: int = 8883,
        retries: int = 2,
        sleep: Sleep = time.sleep,
        max_groups_per_thing: int = DEFAULT_MAX_GROUPS_PER_THING,
        delete_thing_attempts: int = 5,
        status_rule: str | None = None,
    ) -> None:
        """``iot_client`` is a boto3 ``iot`` client; ``endpoint`` the ATS data endpoint host.

        ``network_prefix`` names each network's thing group and policy
        (default ``<thing_prefix>net-``; a stack uses ``<stack name>-net-`` so its
        IAM grants can name exactly its own groups and policies). ``retries``
        extra attempts are made on throttling. ``delete_thing_attempts`` bounds
        the wait for AWS to finish detaching certificates (it does so
        asynchronously) before a thing can be deleted. ``status_rule`` is the
        topic rule for status reports: hosts are told to publish through Basic
        Ingest to it (no broker messaging charge); without it, to the plain topic.
        """
        if not _PREFIX_RE.match(thing_prefix):
            raise ValueError(
                f"thing_prefix {thing_prefix!r}: at most 64 of a-z A-Z 0-9 : _ -"
            )
        if network_prefix is None:
            network_prefix = f"{thing_prefix}net-"
        if not network_prefix or len(network_prefix) > 64 or not _GROUP_NAME_RE.match(network_prefix):
            raise ValueError(
                f"network_prefix {network_prefix!r}: 1 to 64 of a-z A-Z 0-9 _ -"
            )
        if not policy_name:
            raise ValueError("policy_name is required")
        self._iot = iot_client
        MqttAccess.__init__(self, endpoint, port)
        self._policy_name = policy_name
        self._prefix = thing_prefix
        self._network_prefix = network_prefix
        #: Groups known (in this process) to exist with their policy attached: name -> ARN.
        self._ready_groups: dict[str, str] = {}
        self._ca_pem = ca_pem
        self._retries = retries
        self._sleep = sleep
        self._max_groups = max_groups_per_thing
        self._delete_attempts = max(1, delete_thing_attempts)
        self._status_rule = status_rule

    # --- the port -------------------------------------------------------------------

    def status_topic(self, host_id: HostId) -> str:
        if self._status_rule:
            return basic_ingest_topic(self._status_rule, host_id)
        return super().status_topic(host_id)

    def thing_name(self, host_id: str) -> str:
        """The thing name of ``host_id``: the MQTT client id its certificate may connect as."""
        name = self._prefix + host_id
        if not _NAME_RE.match(name):
            raise InvalidInputError(
                f"host id {host_id!r} cannot name an AWS IoT thing "
                "(1-128 of a-z A-Z 0-9 : _ - with the prefix)"
            )
        return name

    def group_name(self, network_id: str) -> str:
        """The thing group whose members may read ``network_id``'s broadcasts; its policy
        has the same name."""
        name = f"{self._group_prefix}{network_id}"
        if not network_id or not _GROUP_NAME_RE.match(name):
            raise InvalidInputError(
                f"network id {network_id!r} cannot name an AWS IoT thing group and policy "
                "(1-128 of a-z A-Z 0-9 _ - with the prefix)"
            )
        return name

    def issue(self, host_id: HostId, csr_pem: str) -> IssuedCertificate:
        """Have AWS IoT sign ``csr_pem`` for ``host_id``: an ACTIVE certificate, attached
        to the host policy and to the host's thing (created if missing).

        All or nothing: if a step after the certificate was made fails, the
        certificate is deactivated, detached and deleted before the error is
        raised. (A thing made on the way is kept: without a certificate it
        grants nothing, and the next attempt reuses it.) Raises
        :class:`InvalidInputError` for a malformed CSR, before calling AWS.
        """
        csr = load_csr(csr_pem)
        thing = self.thing_name(host_id)
        self._ensure_thing(thing, host_id)
        pem = csr.public_bytes(serialization.Encoding.PEM).decode("ascii")
        try:
            created = self._call(
                "create_certificate_from_csr", certificateSigningRequest=pem, setAsActive=True
            )
        except UnavailableError as err:
            if err.code == "aws_invalid_request":
                raise InvalidInputError(
                    f"AWS IoT refused the csr: {err.message}", code="invalid_csr"
                ) from err
            raise
        cert_arn = created["certificateArn"]
        cert_id = created["certificateId"]
        try:
            try:
                self._call("attach_policy", policyName=self._policy_name, target=cert_arn)
            except NotFoundError as err:
                raise UnavailableError(
                    f"AWS IoT policy {self._policy_name!r} does not exist: deploy the stack "
                    "or set SKYMESH_IOT_POLICY to the host policy's name"
                ) from err
            self._call("attach_thing_principal", thingName=thing, principal=cert_arn)
        except Exception:
            self._discard_certificate(cert_id, cert_arn, thing)
            raise
        log.info("issued certificate %s for thing %s", cert_id, thing)
        return IssuedCertificate(
            certificate_pem=created["certificatePem"],
            certificate_id=cert_id,
            ca_pem=self._ca_pem,
        )

    def set_networks(self, host_id: HostId, network_ids: Sequence[NetworkId]) -> None:
        """Make the host's thing a member of exactly its networks' thing groups, so it
        may read exactly these networks' broadcasts.

        Groups and their policies are created when missing. Only skymesh's own
        groups (named ``<network_prefix>…``) are removed; groups someone else put
        the thing in are left alone but count against AWS IoT's limit of groups
        per thing. The thing is created if it does not exist yet. Raises
        :class:`InvalidInputError` when the limit would be exceeded.
        """
        thing = self.thing_name(host_id)
        wanted = {self.group_name(n) for n in network_ids}
        try:
            current = set(self._groups_of(thing))
        except NotFoundError:
            self._ensure_thing(thing, host_id)
            current = set()
        ours = {g for g in current if g.startswith(self._group_prefix)}
        foreign = current - ours
        if len(wanted) + len(foreign) > self._max_groups:
            raise InvalidInputError(
                f"host {host_id} would be in {len(wanted)} networks; AWS IoT allows a host "
                f"in at most {self._max_groups - len(foreign)}",
                code="too_many_networks",
            )
        # Leave first, so the count never goes over the limit on the way.
        for group in sorted(ours - wanted):
            self._call("remove_thing_from_thing_group", thingGroupName=group, thingName=thing)
        for group in sorted(wanted - ours):
            self._join_group(thing, group)

    def remove_network(self, network_id: str) -> None:
        """Delete ``network_id``'s thing group and policy (for a deleted network, or teardown).

        Members are removed from the group first. Idempotent: what is gone is skipped.
        """
        group = self.group_name(network_id)
        self._ready_groups.pop(group, None)
        try:
            arn = self._call("describe_thing_group", thingGroupName=group)["thingGroupArn"]
        except NotFoundError:
            arn = None
        if arn:
            self._tolerate_missing("detach_policy", policyName=group, target=arn)
        self._tolerate_missing("delete_policy", policyName=group)
        if arn:
            self._tolerate_missing("delete_thing_group", thingGroupName=group)

    def revoke(self, host_id: HostId, certificate_id: str) -> None:
        """``certificate_id`` is REVOKED and detached, and the host loses every permission:
        any other certificate still attached to its thing is revoked too, the thing
        leaves its groups and is deleted.

        Idempotent: what is already gone is skipped.
        """
        thing = self.thing_name(host_id)
        cert_ids, other_principals = self._attached(thing, [certificate_id])
        if len(cert_ids) > 1:
            log.warning("thing %s had %d more certificates attached; revoking them too",
                        thing, len(cert_ids) - 1)
        for cid in cert_ids:
            self._detach_certificate(cid, thing, "REVOKED")
        self._remove_thing(thing, other_principals)

    def discard(self, host_id: HostId, certificate_id: str | None) -> None:
        """Delete what an identity that never became a host left: ``certificate_id``
        and every certificate attached to the host's thing are deactivated, detached
        (host policy, thing) and deleted; the thing leaves its groups and is deleted.

        Idempotent: what is already gone is skipped. Detaching is asynchronous in AWS
        IoT: when a certificate or the thing cannot be deleted yet, every certificate
        is already unusable and :class:`UnavailableError` says to try again later.
        """
        thing = self.thing_name(host_id)
        cert_ids, other_principals = self._attached(thing, [certificate_id] if certificate_id else [])
        detached = [cid for cid in cert_ids if self._detach_certificate(cid, thing, "INACTIVE")]
        # The thing can be deleted once AWS has finished detaching (its retries wait
        # for that); only then can the certificates be.
        if not self._remove_thing(thing, other_principals):
            raise UnavailableError(f"thing {thing} is not deleted yet; the next sweep deletes it")
        for cid in detached:
            try:
                self._call("delete_certificate", certificateId=cid, forceDelete=True)
            except NotFoundError:
                pass
            except ConflictError as err:
                raise UnavailableError(
                    f"certificate {cid} is inactive but not deleted yet ({err.message}); "
                    "the next sweep deletes it"
                ) from err
        log.info("discarded the identity of unregistered host %s (certificates: %s)",
                 host_id, ", ".join(cert_ids) or "none")

    # --- steps ------------------------------------------------------------------------

    @property
    def _group_prefix(self) -> str:
        return self._network_prefix

    def _ensure_thing(self, thing: str, host_id: str) -> None:
        try:
            self._call(
                "create_thing",
                thingName=thing,
                attributePayload={"attributes": {"host_id": host_id}},
            )
        except ConflictError:
            # It exists, with other attributes or type: it is still this host's thing.
            log.info("thing %s already exists; reusing it", thing)

    def _join_group(self, thing: str, group: str) -> None:
        self._ensure_network_group(group)
        self._call("add_thing_to_thing_group", thingGroupName=group, thingName=thing)

    def _ensure_network_group(self, group: str) -> None:
        """The group exists with its network policy attached (checked once per process).

        Every step tolerates its result being there already, so a join that was
        interrupted half-way (group made, policy not yet attached) is completed
        by the next one instead of leaving members unable to read.
        """
        if group in self._ready_groups:
            return
        network_id = group[len(self._group_prefix):]
        try:
            arn = self._call("describe_thing_group", thingGroupName=group)["thingGroupArn"]
        except NotFoundError:
            try:
                arn = self._call(
                    "create_thing_group",
                    thingGroupName=group,
                    thingGroupProperties={"thingGroupDescription": f"skymesh network {network_id}"},
                )["thingGroupArn"]
            except ConflictError:  # made concurrently
                arn = self._call("describe_thing_group", thingGroupName=group)["thingGroupArn"]
        document = network_policy_document(iot_arn_prefix(arn), network_id)
        # ConflictError: the policy exists (an earlier join made it).
        with contextlib.suppress(ConflictError):
            self._call("create_policy", policyName=group, policyDocument=json.dumps(document))
        with contextlib.suppress(ConflictError):  # attached already
            self._call("attach_policy", policyName=group, target=arn)
        self._ready_groups[group] = arn

    def _attached(self, thing: str, cert_ids: list[str]) -> tuple[list[str], list[str]]:
        """``cert_ids`` plus the certificates attached to ``thing``; its other principals."""
        cert_ids = list(cert_ids)
        other_principals: list[str] = []
        try:
            for principal in self._principals_of(thing):
                cid = _cert_id_from_arn(principal)
                if cid is None:
                    other_principals.append(principal)
                elif cid not in cert_ids:
                    cert_ids.append(cid)
        except NotFoundError:
            pass  # no thing: nothing attached to it
        return cert_ids, other_principals

    def _detach_certificate(self, cert_id: str, thing: str, status: str) -> str | None:
        """Set the certificate to ``status`` (a REVOKED one stays so) and detach it from the
        host policy and ``thing``; returns its ARN, ``None`` when it does not exist."""
        try:
            desc = self._call("describe_certificate", certificateId=cert_id)
        except NotFoundError:
            log.info("certificate %s no longer exists; nothing to revoke", cert_id)
            return None
        info = desc["certificateDescription"]
        arn: str = info["certificateArn"]
        if info.get("status") not in (status, "REVOKED"):
            self._tolerate_missing("update_certificate", certificateId=cert_id, newStatus=status)
        self._tolerate_missing("detach_policy", policyName=self._policy_name, target=arn)
        self._tolerate_missing("detach_thing_principal", thingName=thing, principal=arn)
        return arn

    def _remove_thing(self, thing: str, other_principals: list[str]) -> bool:
        """Detach ``other_principals``, take the thing out of its groups and delete it;
        ``False`` when AWS has not let it be deleted yet."""
        for principal in other_principals:
            self._tolerate_missing("detach_thing_principal", thingName=thing, principal=principal)
        try:
            groups = list(self._groups_of(thing))
        except NotFoundError:
            groups = []
        for group in groups:
            self._tolerate_missing(
                "remove_thing_from_thing_group", thingGroupName=group, thingName=thing
            )
        return self._delete_thing(thing)

    def _delete_thing(self, thing: str) -> bool:
        """Delete ``thing`` (``True``, also when it is gone); ``False`` when AWS still refuses."""
        # Detaching a certificate is asynchronous in AWS IoT: deleting the thing
        # right after may be refused ("still attached") for a few seconds.
        for attempt in range(self._delete_attempts):
            try:
                self._raw_call("delete_thing", thingName=thing)
                return True
            except ClientError as err:
                code = aws_error_code(err)
                if code == "ResourceNotFoundException":
                    return True
                if code != "InvalidRequestException":
                    raise self._translate(err, "delete_thing") from err
                if attempt + 1 < self._delete_attempts:
                    self._sleep(min(2.0, 0.25 * 2**attempt))
                    continue
                # Every certificate is revoked and detached: the thing grants nothing.
                log.warning("thing %s not deleted (%s); it has no usable certificate, "
                            "a later revoke will delete it", thing, aws_error_message(err))
            except BotoCoreError as err:
                raise unavailable_error(err, self._label("delete_thing")) from err
        return False

    def _discard_certificate(self, cert_id: str, cert_arn: str, thing: str) -> None:
        """Undo a half-made identity; best effort, never raises (the first error matters)."""
        steps: list[tuple[str, dict[str, Any]]] = [
            ("update_certificate", {"certificateId": cert_id, "newStatus": "INACTIVE"}),
            ("detach_thing_principal", {"thingName": thing, "principal": cert_arn}),
            ("detach_policy", {"policyName": self._policy_name, "target": cert_arn}),
            ("delete_certificate", {"certificateId": cert_id, "forceDelete": True}),
        ]
        failed = False
        for operation, params in steps:
            try:
                self._call(operation, **params)
            except NotFoundError:
                continue
            except SkymeshError as err:
                failed = True
                log.error("rollback of certificate %s: %s failed: %s",
                          cert_id, self._label(operation), err.message)
                if operation == "delete_certificate":
                    self._last_resort_revoke(cert_id)
        if not failed:
            log.info("rolled back certificate %s", cert_id)

    def _last_resort_revoke(self, cert_id: str) -> None:
        try:
            self._call("update_certificate", certificateId=cert_id, newStatus="REVOKED")
        except SkymeshError as err:
            log.error("certificate %s is INACTIVE but could not be deleted or revoked: %s",
                      cert_id, err.message)

    # --- listing ------------------------------------------------------------------------

    def _groups_of(self, thing: str) -> Iterator[str]:
        token: str | None = None
        while True:
            params: dict[str, Any] = {"thingName": thing, "maxResults": 250}
            if token:
                params["nextToken"] = token
            page = self._call("list_thing_groups_for_thing", **params)
            for group in page.get("thingGroups", []):
                yield group["groupName"]
            token = page.get("nextToken")
            if not token:
                return

    def _principals_of(self, thing: str) -> Iterator[str]:
        token: str | None = None
        while True:
            params: dict[str, Any] = {"thingName": thing, "maxResults": 250}
            if token:
                params["nextToken"] = token
            page = self._call("list_thing_principals", **params)
            yield from page.get("principals", [])
            token = page.get("nextToken")
            if not token:
                return

    # --- calling AWS ---------------------------------------------------------------------

    def _label(self, operation: str) -> str:
        mapping = getattr(getattr(self._iot, "meta", None), "method_to_api_mapping", {}) or {}
        api = mapping.get(operation) or "".join(p.capitalize() for p in operation.split("_"))
        return f"iot:{api}"

    def _raw_call(self, operation: str, **params: Any) -> Any:
        return call_with_retries(
            getattr(self._iot, operation),
            params,
            label=self._label(operation),
            retries=self._retries,
            sleep=self._sleep,
        )

    def _call(self, operation: str, **params: Any) -> Any:
        """Call ``operation`` with throttling retried; AWS errors become skymesh errors."""
        try:
            return self._raw_call(operation, **params)
        except ClientError as err:
            raise self._translate(err, operation) from err
        except BotoCoreError as err:
            raise unavailable_error(err, self._label(operation)) from err

    def _tolerate_missing(self, operation: str, **params: Any) -> None:
        with contextlib.suppress(NotFoundError):
            self._call(operation, **params)

    def _translate(self, err: ClientError, operation: str) -> SkymeshError:
        code = aws_error_code(err)
        detail = aws_error_message(err)
        label = self._label(operation)
        if code == "ResourceNotFoundException":
            return NotFoundError(f"AWS IoT {label}: not found ({detail})")
        if code in ("ResourceAlreadyExistsException", "DeleteConflictException",
                    "VersionConflictException", "ConflictException",
                    "CertificateStateException", "ConflictingResourceUpdateException"):
            return ConflictError(f"AWS IoT {label}: {code} ({detail}); read again and retry")
        if code == "LimitExceededException":
            return UnavailableError(
                f"AWS IoT {label}: a service quota is exhausted ({detail}); raise the quota "
                "or remove unused things, certificates or groups",
                code="aws_limit_exceeded",
            )
        if code == "InvalidRequestException":
            return UnavailableError(f"AWS IoT {label} refused the request: {detail}",
                                    code="aws_invalid_request")
        return unavailable_error(err, label)
