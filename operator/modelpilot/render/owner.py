"""The identity of the ModelDeployment being rendered: what owned objects point back to."""

from __future__ import annotations

from dataclasses import dataclass

from ..api import GROUP, KIND, VERSION


@dataclass(frozen=True)
class Owner:
    name: str
    namespace: str
    uid: str

    def reference(self) -> dict:
        """An ownerReference that makes the garbage collector delete the object with its ModelDeployment."""
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def involved(self) -> dict:
        """The ModelDeployment as an Event's involvedObject."""
        return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": self.name, "namespace": self.namespace, "uid": self.uid}

    def metadata(self, name: str, labels: dict[str, str]) -> dict:
        return {"name": name, "namespace": self.namespace, "labels": labels, "ownerReferences": [self.reference()]}
