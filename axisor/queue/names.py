"""Queue and job names shared by producers, workers and the operator commands."""

MARGIN_GUARD_QUEUE = "margin-guard"
AUTOMATION_QUEUE = "automation-execute"
QUEUES = (MARGIN_GUARD_QUEUE, AUTOMATION_QUEUE)

GUARD_CHECK_JOB = "margin-guard-check"  # reconcile one account's positions with the exchange
GUARD_ACTION_JOB = "margin-guard-action"  # act on one position whose trigger was crossed
GUARD_CROSS_JOB = "margin-guard-cross"  # act on an account's cross position past its trigger
AUTOMATION_JOB = "automation-execute"  # act once on an automation whose trigger was crossed

# Redis stream on which workers announce changed positions; the engine re-reads them.
POSITION_EVENTS_STREAM = "axisor:position-events"
# Redis stream on which workers announce accounts whose cross position the guard changed or
# checked; the cross engine re-reads those positions.
CROSS_EVENTS_STREAM = "axisor:cross-events"
# Redis stream on which writers announce changed automations; the automation engine re-reads them.
AUTOMATION_EVENTS_STREAM = "axisor:automation-events"

# BullMQ priorities run from 1 (first) to 2,097,152 (last).
MAX_PRIORITY = 2_097_152
