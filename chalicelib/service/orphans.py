"""Identities whose registration died between the certificate and the commit.

A registration records a pending identity before it asks for a certificate and
removes it in the transaction that commits the host (:meth:`Hosts.register`).
When the process dies in between (a Lambda timeout, a killed local server), the
certificate and its broker access would stay forever: nothing else names them.
The sweeper finds pending identities older than any registration can last and
removes what they name through the identity port.

It first *claims* the record in a transaction that also checks that the host
does not exist; a registration still running then cannot commit (its commit
requires an unclaimed record), so a certificate is never withdrawn from a host
that is committed. A cleanup that fails half-way keeps its claimed record and is
finished by the next sweep.

>>> Orphans(deps).sweep()                                  # doctest: +SKIP
['host_...']
"""

from __future__ import annotations

from ..domain.ids import HostId
from ..errors import SkymeshError
from .deps import Deps, log

__all__ = ["Orphans"]


class Orphans:
    def __init__(self, deps: Deps) -> None:
        self._d = deps

    def sweep(self) -> list[HostId]:
        """Discard the identity of every registration that started more than
        ``settings.orphan_after`` seconds ago and did not commit; returns their host ids.

        A pending identity whose host did commit is only forgotten. Never raises for
        one identity: what fails is logged and tried again by the next sweep.
        """
        d = self._d
        now = d.clock.now()
        discarded = []
        for pending in d.store.pending_identities():
            if now - pending.created_at <= d.settings.orphan_after:
                continue  # may still be registering
            try:
                claimed = d.store.abandon_identity(pending.host_id)
                if claimed is not None:
                    d.identity.discard(claimed.host_id, claimed.certificate_id)
                    discarded.append(claimed.host_id)
                    log.info("registration of %s died before its commit; certificate %s and "
                             "broker access removed", claimed.host_id, claimed.certificate_id or "(none)")
                d.store.forget_identity(pending.host_id)
            except SkymeshError as e:
                log.warning("identity of unfinished registration %s: cleanup left for the next "
                            "sweep: %s", pending.host_id, e.message)
        return discarded
