"""A local S3 endpoint: moto's server, taught to leave alone bucket-policy statements it cannot evaluate.

moto 5.2 evaluates only `StringEquals` in policy conditions; any other condition (such as the standard TLS-only
`Bool aws:SecureTransport=false` Deny) is treated as matching every request, so the declared policy would deny
all access. We keep the declared policy stored unchanged (bootstrap writes it, doctor and audits compare it) and
patch moto so a statement with a condition operator it cannot evaluate does not apply. Unconditional statements
and `StringEquals` ones are still enforced, so policies stay checked.

Run: `python -m t2m_pipeline.devtools.local_s3 -H 127.0.0.1 -p 5000`.
"""

from __future__ import annotations

import sys

EVALUATED_OPERATORS = frozenset({"StringEquals"})


def patch_moto_policy_conditions() -> None:
    from moto.iam import access_control

    statement_cls = access_control.IAMPolicyStatement
    if getattr(statement_cls, "_t2m_patched", False):
        return
    original = statement_cls.is_action_permitted

    def is_action_permitted(self, action, resource="*", principal=None, incoming_condition_values=None):
        conditions = self._statement.get("Condition") or {}
        if any(operator not in EVALUATED_OPERATORS for operator in conditions):
            return access_control.PermissionResult.NEUTRAL
        return original(self, action, resource, principal, incoming_condition_values)

    statement_cls.is_action_permitted = is_action_permitted
    statement_cls._t2m_patched = True


def main(argv: list[str] | None = None) -> None:
    patch_moto_policy_conditions()
    from moto.server import main as moto_main

    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
