"""The domain: jobs, who may run them, and how they run through containers."""
