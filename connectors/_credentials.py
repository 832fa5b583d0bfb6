"""Credentials per collectivité: one endpoint, each SIREN (or group of SIRENs) logging in as itself.

A regional platform transmits for hundreds of collectivités through one tiers de
télétransmission, each with its own RGS certificate or account.  An endpoint's ``credentials:``
lists sets of credentials with the SIRENs they act for; the connector's own options are the
default for the others::

    prefecture:
      type: s2low
      url: https://s2low.example.fr
      client_cert: /etc/hent/certs/syndicat.pem          # the default
      client_key: /etc/hent/certs/syndicat.key
      credentials:
        - sirens: ["214400152"]
          client_cert: /etc/hent/certs/saint-herblain.pem
          client_key: /etc/hent/certs/saint-herblain.key
        - sirens: ["200012345", "200067890"]             # a group sharing one account
          login: groupement
          password: ${S2LOW_GROUPEMENT_PASSWORD}

:func:`credentials_model` builds the model of one set from the connector's own fields;
:meth:`bus.connector.OutboundConnector.scoped` gives the connector acting for a SIREN.
"""

from __future__ import annotations

__all__ = ["CredentialSet", "credentials_field", "credentials_model"]

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, create_model

from bus.config_types import _siren

Siren = Annotated[str, PlainValidator(_siren)]


class CredentialSet(BaseModel):
    """The SIRENs a set of credentials acts for; each connector adds its own credential fields."""

    model_config = ConfigDict(extra="forbid")

    sirens: list[Siren] = Field(..., min_length=1, description="The collectivités (SIREN) these credentials act for.")
    description: str | None = Field(None, description="Who they are, for the operators.")

    def overrides(self) -> dict[str, Any]:
        """The credential fields this set gives (the others keep the connector's own values)."""
        return {name: value for name, value in self if name not in ("sirens", "description") and value is not None}


def credentials_model(name: str, base: type[BaseModel], fields: tuple[str, ...]) -> type[CredentialSet]:
    """A :class:`CredentialSet` holding ``fields`` as ``base`` (the connector's Config) declares them,
    all optional."""
    declared: dict[str, Any] = {}
    for field in fields:
        info = base.model_fields[field]
        declared[field] = (info.annotation | None, Field(None, description=info.description,  # type: ignore[operator]
                                                         json_schema_extra=info.json_schema_extra))
    return create_model(name, __base__=CredentialSet, **declared)


def credentials_field() -> Any:
    """The ``credentials:`` option of a connector's Config (a list of its :func:`credentials_model`)."""
    return Field(default_factory=list, description="Credentials of their own for some collectivités (by SIREN) "
                 "or groups; the options above are the default (connectors/_credentials.py).")
