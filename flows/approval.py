"""The approval step: with ``register.require_approval``, versions that passed the gate wait as
``challenger`` while the flow pauses for a person's answer in the Prefect UI."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run

from electra.core.config import Params


class PromotionApproval(RunInput):
    """The form a person fills in the Prefect UI to let gated versions become champion."""

    approve: bool = False
    approver: str = ""
    reason: str = ""


@task(name="promote", task_run_name="promote")
def promote_approved(params: Params, pending: dict[str, str], approval: PromotionApproval) -> dict[str, dict]:
    """Move champion to each version the person approved (the approval recorded as the reason)."""
    from electra.registry.register import promote
    from electra.core.tracking import configure

    configure(params.tracking)
    reason = f"approved by {approval.approver or 'unknown'} in Prefect flow run {flow_run.id}: {approval.reason}"
    return {name: promote(name, version, reason) for name, version in pending.items()}


def await_approval(params: Params, pending: dict[str, str]) -> dict:
    """Pause the flow until a person approves (or declines) promoting ``pending``."""
    logger = get_run_logger()
    logger.info("awaiting approval to promote %s", pending)
    approval = pause_flow_run(wait_for_input=PromotionApproval, timeout=params.register.approval_timeout_s,
                              poll_interval=5)
    if approval.approve:
        return promote_approved(params, pending, approval)
    logger.info("promotion declined by %s: %s", approval.approver or "unknown", approval.reason)
    return {"declined": approval.reason}
