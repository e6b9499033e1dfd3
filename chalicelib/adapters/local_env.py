"""The local stack's adapters (MQTT publisher, local-CA identity) from its configuration.

Their settings come from :class:`chalicelib.config.LocalConfig` (variables
``SKYMESH_HOME`` and ``SKYMESH_MQTT_*``; meanings in :data:`chalicelib.config.VARIABLES`),
which ``skymesh local up`` sets for every child process
(:func:`chalicelib.config.local_stage_env` plus each child's own control certificate).

Each concurrently running process needs its own control certificate (the
broker forces the client id to the CN), which is why the stack gives each
child its own pair.
"""

from __future__ import annotations

from ..config import LocalConfig
from ..service.ports import HostIdentity, Publisher
from .local_identity import LocalCaIdentity
from .mqtt_publisher import MqttPublisher

__all__ = ["local_adapters"]


def local_adapters(config: LocalConfig) -> tuple[Publisher, HostIdentity]:
    """The MQTT publisher and local-CA identity ``config`` describes.

    With ``client_name`` instead of a certificate, the control client certificate of
    that name is made (or reused) under ``home/control/``. Nothing connects yet.
    """
    identity = LocalCaIdentity(config.home, config.endpoint, config.mqtt_port)
    cert, key = config.client_cert, config.client_key
    if cert is None or key is None:
        assert config.client_name is not None  # StageConfig.from_env checks one of the two is set
        creds = identity.issue_control_client(config.client_name)
        cert, key = creds.cert_path, creds.key_path
    publisher = MqttPublisher(config.mqtt_host, config.mqtt_port, config.ca_path, cert, key,
                              timeout=config.mqtt_timeout)
    return publisher, identity
