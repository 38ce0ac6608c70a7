"""Queues: names, job payloads and the producers that add jobs to BullMQ."""
