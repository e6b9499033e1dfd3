"""Admin keys and enrollment keys: tokens stored hashed, one item each.

A key's id is new for every key, so a put that finds one there is refused by its
condition rather than overwriting it. An enrollment key's uses are consumed by the
registration transaction (:mod:`.hosts`), not here.
"""

from __future__ import annotations

from ...domain.models import AdminKey, EnrollmentKey
from ...errors import NotFoundError
from ...service.ports import Page
from . import layout, mapping
from .base import StoreBase
from .tx import guard_update

__all__ = ["KeyRecords"]


class KeyRecords(StoreBase):
    # ---------------------------------------------------------------- admin keys
    def put_admin_key(self, key: AdminKey) -> None:
        self._put_new(mapping.admin_item(self._items, key))

    def get_admin_key(self, key_id: str) -> AdminKey | None:
        item = self._get(self._items.admin, layout.admin_pk(key_id), layout.META)
        return None if item is None else mapping.admin_key(item)

    def list_admin_keys(self) -> list[AdminKey]:
        return [mapping.admin_key(i) for i in self._by_kind(self._items.admin, "admin_key")]

    # ---------------------------------------------------------- enrollment keys
    def put_enrollment_key(self, key: EnrollmentKey) -> None:
        self._put_new(mapping.key_item(self._items, key))

    def get_enrollment_key(self, key_id: str) -> EnrollmentKey | None:
        item = self._get(self._items.key, layout.key_pk(key_id), layout.META)
        return None if item is None else mapping.enrollment_key(item)

    def list_enrollment_keys(self, limit: int, cursor: str | None = None) -> Page[EnrollmentKey]:
        return self._page_by_kind(self._items.key, "enrollment_key", layout.KEY_PREFIX, limit, cursor,
                                  mapping.enrollment_key)

    def revoke_enrollment_key(self, key_id: str) -> None:
        k = self._items.key
        guard_update(
            k(layout.key_pk(key_id), layout.META),
            [k.revoked.set(True)],
            k.pk.exists(),
            NotFoundError(f"enrollment key {key_id} does not exist"),
        )
