"""Workers: BullMQ processors for the margin-guard and automation-execute queues."""
