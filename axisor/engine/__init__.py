"""Engine: decides on each price tick which positions need action, and queues the jobs."""
